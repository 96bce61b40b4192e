//! PyTorch's SDPA backends as peers, through a Python process that stays up for the whole run
//! (`sdpa_peer.py`), so their runs can interleave with ours. Missing Python or PyTorch makes
//! every backend "missing", with the reason.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

pub const BACKENDS: [&str; 4] = ["flash", "cudnn", "efficient", "math"];
const SCRIPT: &str = include_str!("sdpa_peer.py");

pub struct TorchPeer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// `torch <version>`, as the peer reported it.
    pub version: String,
}

pub enum Reply {
    Times { peak_bytes: u64, ms: Vec<f64> },
    Error(f64),
    Ok,
    Missing(String),
}

impl TorchPeer {
    pub fn start() -> Result<TorchPeer, String> {
        let script = std::env::temp_dir().join(format!("rustflash-sdpa-peer-{}.py", std::process::id()));
        std::fs::write(&script, SCRIPT).map_err(|e| format!("cannot write the peer script: {e}"))?;
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        let mut child = Command::new(&python)
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {python}: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut peer = TorchPeer { child, stdin, stdout, version: String::new() };
        let first = peer.read_line()?;
        let mut words = first.split_whitespace();
        match words.next() {
            Some("ready") => {
                peer.version = format!("torch {}", words.next().unwrap_or("?"));
                Ok(peer)
            }
            _ => Err(first.trim_start_matches("unavailable ").to_string()),
        }
    }

    fn read_line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) => Err("the PyTorch peer exited".into()),
            Ok(_) => Ok(line.trim().to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    pub fn ask(&mut self, command: &str) -> Reply {
        if let Err(e) = writeln!(self.stdin, "{command}").and_then(|_| self.stdin.flush()) {
            return Reply::Missing(format!("the PyTorch peer is gone: {e}"));
        }
        let line = match self.read_line() {
            Ok(l) => l,
            Err(e) => return Reply::Missing(e),
        };
        let mut words = line.split_whitespace();
        match words.next() {
            Some("ok") => Reply::Ok,
            Some("times") => {
                let peak_bytes = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                Reply::Times { peak_bytes, ms: words.filter_map(|w| w.parse().ok()).collect() }
            }
            Some("error") => Reply::Error(words.next().and_then(|w| w.parse().ok()).unwrap_or(f64::NAN)),
            _ => Reply::Missing(line.trim_start_matches("missing ").to_string()),
        }
    }
}

impl Drop for TorchPeer {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.wait();
    }
}
