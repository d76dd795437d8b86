//! The controllers the manager enables, as a set.

use std::fmt;

/// A controller this manager enables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Controller {
    Cpu,
    Memory,
    Pids,
    Io,
}

impl Controller {
    pub(super) const ALL: [Controller; 4] = [
        Controller::Cpu,
        Controller::Memory,
        Controller::Pids,
        Controller::Io,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Controller::Cpu => "cpu",
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Io => "io",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of [`Controller`]s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Controllers(u8);

impl Controllers {
    /// The managed controllers listed in a `cgroup.controllers` file.
    pub(super) fn from_list(text: &str) -> Controllers {
        let mut set = Controllers::default();
        for name in text.split_ascii_whitespace() {
            if let Some(c) = Controller::ALL.into_iter().find(|c| c.name() == name) {
                set.0 |= c.bit();
            }
        }
        set
    }

    pub(super) fn contains(self, c: Controller) -> bool {
        self.0 & c.bit() != 0
    }

    pub(super) fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The managed controllers not in this set.
    pub(super) fn missing(self) -> Vec<&'static str> {
        Controller::ALL
            .into_iter()
            .filter(|c| !self.contains(*c))
            .map(Controller::name)
            .collect()
    }

    /// What enables them in a `cgroup.subtree_control`: `+cpu +memory ...`.
    pub(super) fn subtree_control(self) -> String {
        let enabled: Vec<String> = Controller::ALL
            .into_iter()
            .filter(|c| self.contains(*c))
            .map(|c| format!("+{}", c.name()))
            .collect();
        enabled.join(" ")
    }
}

impl fmt::Display for Controllers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Controller::ALL
            .into_iter()
            .filter(|c| self.contains(*c))
            .map(Controller::name)
            .collect();
        f.write_str(&names.join(","))
    }
}
