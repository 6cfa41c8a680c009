//! A scripted session: its steps ([`Step`], [`Cmd`]), built with [`Session`]'s methods,
//! and the replies a run records ([`Record`]).

use std::collections::HashMap;

use super::resp::{encode, esc, Val};

/// One command of a step.
#[derive(Clone, Debug)]
pub(super) enum Cmd {
    /// Sent as a RESP array of bulk strings; `{name}` in an argument is replaced by a
    /// captured variable.
    Args(Vec<String>),
    /// Sent exactly as given (inline commands, mixed pipelines).
    Raw(Vec<u8>),
}

impl Cmd {
    /// Parses `line` into words: whitespace separates them, `"..."` quotes (with `\"`,
    /// `\\`, `\n`, `\r` escapes).
    pub(super) fn parse(line: &str) -> Cmd {
        let mut words = Vec::new();
        let mut chars = line.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            let Some(&first) = chars.peek() else { break };
            let mut word = String::new();
            if first == '"' {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some('n') => word.push('\n'),
                            Some('r') => word.push('\r'),
                            Some(other) => word.push(other),
                            None => {}
                        },
                        c => word.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
            }
            words.push(word);
        }
        Cmd::Args(words)
    }

    /// The words, variables substituted.
    pub(super) fn words(&self, vars: &HashMap<String, String>) -> Vec<Vec<u8>> {
        match self {
            Cmd::Args(words) => words
                .iter()
                .map(|w| {
                    let mut w = w.clone();
                    for (k, v) in vars {
                        w = w.replace(&format!("{{{k}}}"), v);
                    }
                    w.into_bytes()
                })
                .collect(),
            Cmd::Raw(bytes) => bytes
                .split(|b| b.is_ascii_whitespace())
                .filter(|w| !w.is_empty())
                .map(<[u8]>::to_vec)
                .collect(),
        }
    }

    /// The bytes sent.
    pub(super) fn bytes(&self, vars: &HashMap<String, String>) -> Vec<u8> {
        match self {
            Cmd::Args(_) => encode(&self.words(vars)),
            Cmd::Raw(bytes) => bytes.clone(),
        }
    }

    /// How the command is shown in a difference.
    pub(super) fn label(&self) -> String {
        match self {
            Cmd::Args(words) => words
                .iter()
                .map(|w| {
                    if w.is_empty() || w.contains(|c: char| c.is_whitespace() || c == '"') {
                        format!("{w:?}")
                    } else {
                        w.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join(" "),
            Cmd::Raw(bytes) => format!("raw \"{}\"", esc(bytes)),
        }
    }
}

/// One step of a session.
#[derive(Clone, Debug)]
pub(super) enum Step {
    /// Client `client` writes `cmds` in one `write`, then reads `replies` frames (0: the
    /// replies are read by a later [`Step::Read`], or there are none). With `capture`,
    /// the integer reply is kept as that variable for later `{name}` arguments.
    Send {
        client: usize,
        cmds: Vec<Cmd>,
        replies: usize,
        capture: Option<&'static str>,
    },
    /// Client `client` reads `n` more frames (pushes, the reply of a blocking command).
    Read { client: usize, n: usize },
    /// A whole SCAN-family loop: `args` with `{cursor}`, from 0 until the cursor is 0;
    /// `pairs` for HSCAN/ZSCAN. Records one synthetic reply (see the module docs).
    Scan {
        client: usize,
        args: Cmd,
        pairs: bool,
    },
    /// A command on the world's master itself (not through a client of the session),
    /// to look at the backend's state; its reply is recorded like a client's.
    OnMaster { cmd: Cmd },
    /// A command on every server of the world, master and replicas, not recorded: for
    /// what Redis does not replicate (`ACL SETUSER`).
    OnAllNodes { words: Vec<String> },
    /// Polls a command on the master until `until` holds for its reply (not recorded).
    AwaitMaster {
        cmd: Cmd,
        what: &'static str,
        until: fn(&Val) -> bool,
    },
    /// Repeats a command on a client until `until` holds for its reply (or the
    /// deadline passes); the last reply is recorded. For what a world shows within a
    /// bounded time rather than at once (the proxy answers `PING` from its monitor's
    /// last look at the master, at most one poll interval old).
    AwaitClient {
        client: usize,
        cmd: Cmd,
        until: fn(&Val) -> bool,
    },
}

impl Step {
    pub(super) fn client(&self) -> Option<usize> {
        match self {
            Step::Send { client, .. }
            | Step::Read { client, .. }
            | Step::Scan { client, .. }
            | Step::AwaitClient { client, .. } => Some(*client),
            Step::OnMaster { .. } | Step::AwaitMaster { .. } | Step::OnAllNodes { .. } => None,
        }
    }
}

/// A scripted session: a name, how many clients, the steps.
#[derive(Clone, Debug)]
pub(super) struct Session {
    pub(super) name: String,
    pub(super) clients: usize,
    pub(super) steps: Vec<Step>,
}

impl Session {
    /// An empty session of `clients` clients.
    pub(super) fn new(name: &str, clients: usize) -> Session {
        Session {
            name: name.to_owned(),
            clients,
            steps: Vec::new(),
        }
    }

    fn push(mut self, step: Step) -> Session {
        if let Some(c) = step.client() {
            assert!(c < self.clients, "{}: client {c} out of range", self.name);
        }
        self.steps.push(step);
        self
    }

    /// Client `c` sends `line` and reads its reply.
    pub(super) fn cmd(self, c: usize, line: &str) -> Session {
        self.cmds(c, vec![Cmd::parse(line)], 1)
    }

    /// Client `c` sends the given words (for arguments with newlines) and reads 1 reply.
    pub(super) fn args(self, c: usize, args: &[&str]) -> Session {
        let cmd = Cmd::Args(args.iter().map(|a| (*a).to_owned()).collect());
        self.cmds(c, vec![cmd], 1)
    }

    /// Client `c` sends `line` and reads `replies` frames.
    pub(super) fn cmd_n(self, c: usize, line: &str, replies: usize) -> Session {
        self.cmds(c, vec![Cmd::parse(line)], replies)
    }

    /// Client `c` sends `line` without reading a reply now.
    pub(super) fn send(self, c: usize, line: &str) -> Session {
        self.cmds(c, vec![Cmd::parse(line)], 0)
    }

    /// Client `c` writes all `lines` in one write, then reads one reply per line.
    pub(super) fn pipeline(self, c: usize, lines: &[&str]) -> Session {
        let cmds: Vec<Cmd> = lines.iter().map(|l| Cmd::parse(l)).collect();
        let n = cmds.len();
        self.cmds(c, cmds, n)
    }

    /// Client `c` writes `bytes` as they are and reads `replies` frames.
    pub(super) fn raw(self, c: usize, bytes: &[u8], replies: usize) -> Session {
        self.cmds(c, vec![Cmd::Raw(bytes.to_vec())], replies)
    }

    pub(super) fn cmds(self, client: usize, cmds: Vec<Cmd>, replies: usize) -> Session {
        self.push(Step::Send {
            client,
            cmds,
            replies,
            capture: None,
        })
    }

    /// Client `c` runs `line` (e.g. `CLIENT ID`) and keeps its integer reply as `var`.
    pub(super) fn capture(self, c: usize, line: &str, var: &'static str) -> Session {
        self.push(Step::Send {
            client: c,
            cmds: vec![Cmd::parse(line)],
            replies: 1,
            capture: Some(var),
        })
    }

    /// Client `c` reads `n` more frames.
    pub(super) fn read(self, c: usize, n: usize) -> Session {
        self.push(Step::Read { client: c, n })
    }

    /// Client `c` runs a whole SCAN-family loop (`line` contains `{cursor}`).
    pub(super) fn scan(self, c: usize, line: &str, pairs: bool) -> Session {
        self.push(Step::Scan {
            client: c,
            args: Cmd::parse(line),
            pairs,
        })
    }

    /// `line` on the world's master, recorded.
    pub(super) fn on_master(self, line: &str) -> Session {
        self.push(Step::OnMaster {
            cmd: Cmd::parse(line),
        })
    }

    /// The given words on every server of the world (not recorded).
    pub(super) fn on_all_nodes(self, words: &[&str]) -> Session {
        self.push(Step::OnAllNodes {
            words: words.iter().map(|w| (*w).to_owned()).collect(),
        })
    }

    /// Repeats `line` on client `c` until `until` holds for its reply; records the last.
    pub(super) fn await_client(self, c: usize, line: &str, until: fn(&Val) -> bool) -> Session {
        self.push(Step::AwaitClient {
            client: c,
            cmd: Cmd::parse(line),
            until,
        })
    }

    /// Polls `line` on the world's master until `until` holds.
    pub(super) fn await_master(
        self,
        line: &str,
        what: &'static str,
        until: fn(&Val) -> bool,
    ) -> Session {
        self.push(Step::AwaitMaster {
            cmd: Cmd::parse(line),
            what,
            until,
        })
    }
}

/// One recorded reply.
#[derive(Clone, Debug)]
pub(super) struct Record {
    /// Step index in the session (0-based).
    pub(super) step: usize,
    /// The client, `None` for [`Step::OnMaster`].
    pub(super) client: Option<usize>,
    /// The command it answers, as shown in a difference.
    pub(super) label: String,
    /// The words of that command (for normalization), if known.
    pub(super) words: Vec<Vec<u8>>,
    /// The raw reply (or a `<...>` marker).
    pub(super) reply: Vec<u8>,
}
