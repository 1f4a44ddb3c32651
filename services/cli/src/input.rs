//! Reading program and event files. Both use the canonical proto3 JSON mapping of
//! `payoff.v1`, so any protobuf library or grpcurl can write them.

use std::{
    fs::File,
    io::{BufRead, BufReader},
    path::Path,
};

use anyhow::{Context, bail};
use payoff_core::{
    event::{Event, RawEvent},
    program::ProgramHistory,
    time::Timestamp,
};
use payoff_proto::{convert, v1};

/// Reads program versions: each file holds one `Program` object or an array of them.
pub fn programs(paths: &[impl AsRef<Path>]) -> anyhow::Result<ProgramHistory> {
    let mut history = ProgramHistory::default();
    for path in paths {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read program file {}", path.display()))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        let versions = match value {
            serde_json::Value::Array(items) => items,
            other => vec![other],
        };
        for (i, v) in versions.into_iter().enumerate() {
            let proto: v1::Program = serde_json::from_value(v).with_context(|| {
                format!("{}: program {i} is not a payoff.v1.Program", path.display())
            })?;
            let program = convert::program(&proto)
                .map_err(|e| anyhow::anyhow!("{}: program {i}: {e}", path.display()))?;
            history.insert(program);
        }
    }
    if history.versions().is_empty() {
        bail!("no program given");
    }
    Ok(history)
}

/// A line-numbered event reader over a JSONL file. Blank lines are skipped.
pub struct Events {
    lines: std::io::Lines<BufReader<File>>,
    line: usize,
    salt: Vec<u8>,
    /// Bytes read so far (for progress).
    pub bytes: u64,
}

impl Events {
    /// Opens `path`. Raw PII in events is hashed with `salt`, as ingest would.
    pub fn open(path: &Path, salt: &[u8]) -> anyhow::Result<(Self, u64)> {
        let file = File::open(path)
            .with_context(|| format!("cannot open event file {}", path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok((
            Self {
                lines: BufReader::new(file).lines(),
                line: 0,
                salt: salt.to_vec(),
                bytes: 0,
            },
            size,
        ))
    }
}

impl Iterator for Events {
    type Item = anyhow::Result<Event>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let line = match self.lines.next()? {
                Ok(l) => l,
                Err(e) => {
                    return Some(Err(e).context(format!("line {}: cannot read", self.line + 1)));
                }
            };
            self.line += 1;
            self.bytes += line.len() as u64 + 1;
            if line.trim().is_empty() {
                continue;
            }
            return Some(
                parse_event(&line, &self.salt).with_context(|| format!("line {}", self.line)),
            );
        }
    }
}

/// Parses and validates one JSON event. The future-time rule is judged against the
/// event's `receivedAt` (set by ingest) when present; files written by hand have none.
pub fn parse_event(line: &str, salt: &[u8]) -> anyhow::Result<Event> {
    let mut proto: v1::Event = serde_json::from_str(line).context("not a payoff.v1.Event")?;
    convert::hash_pii(&mut proto, salt);
    let now = proto
        .received_at
        .as_ref()
        .map_or(Timestamp::from_millis(i64::MAX / 2), convert::timestamp);
    Event::validate(&RawEvent::from(&proto), now).map_err(|e| anyhow::anyhow!("{e}"))
}
