//! The shutdown signal: SIGTERM or SIGINT cancels a token that every task watches; a
//! second signal exits at once with a non-zero code.

use tokio_util::sync::CancellationToken;

/// Exit code after a second signal (128 + SIGINT).
pub const FORCED_EXIT_CODE: i32 = 130;

/// A token cancelled on the first SIGTERM or SIGINT. A second one ends the process.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received, draining");
        cancel.cancel();
        wait_for_signal().await;
        tracing::error!("second shutdown signal, exiting now");
        std::process::exit(FORCED_EXIT_CODE);
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
