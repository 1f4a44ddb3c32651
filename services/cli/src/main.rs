//! The `payoff` command line.
fn main() {}
