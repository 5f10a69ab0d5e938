//! One network namespace's O(1) counters, from the `/proc/PID/net/` files of a process in
//! it (or `/proc/thread-self/net/` of a thread that entered it): `sockstat` and
//! `stat/nf_conntrack` for every namespace (what it is ranked by), `sockstat6`, `snmp` and
//! `netstat` for the ones exported.
//!
//! Each namespace's files are opened at first need and kept ([`crate::sources::kernel::kept`]): re-reading
//! a kept file costs a third to a seventh of an open and a read. Kept files hold their
//! namespace, so the namespaces source drops a namespace's [`NetFiles`] as soon as
//! discovery no longer finds it. When the process may keep no more descriptors, a file is
//! opened and closed at each read, as before.

use std::path::{Path, PathBuf};

use crate::sources::kernel::kept::KeptFile;
use crate::sources::kernel::SourceError;

/// One namespace's O(1) counters. `None`: the kernel does not have it here (no conntrack
/// module, an older kernel's missing column).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NsCounters {
    pub tcp_inuse: u64,
    pub time_wait: u64,
    pub udp_inuse: Option<u64>,
    pub conntrack_entries: Option<u64>,
    pub conntrack_drop: Option<u64>,
    pub conntrack_early_drop: Option<u64>,
    pub conntrack_insert_failed: Option<u64>,
    pub active_opens: Option<u64>,
    pub attempt_fails: Option<u64>,
    pub listen_overflows: Option<u64>,
    pub time_wait_overflow: Option<u64>,
}

/// The files, by index into [`NetFiles`]' slots.
const SOCKSTAT: usize = 0;
const CONNTRACK_STAT: usize = 1;
const SOCKSTAT6: usize = 2;
const SNMP: usize = 3;
const NETSTAT: usize = 4;
const FILES: [&str; 5] = ["net/sockstat", "net/stat/nf_conntrack", "net/sockstat6", "net/snmp", "net/netstat"];

/// One namespace's files under a directory (`/proc/PID`), each kept open once read.
#[derive(Debug)]
pub struct NetFiles {
    dir: PathBuf,
    /// Opened by a thread inside the namespace: `dir` (its `/proc/thread-self`) is not
    /// this namespace's from any other thread, so nothing more is opened through it.
    entered: bool,
    /// `None`: not opened (not needed yet, absent, or no descriptor to spare).
    slots: [Option<KeptFile>; 5],
}

impl NetFiles {
    /// How many files a namespace has.
    pub const COUNT: usize = FILES.len();

    pub fn new(dir: PathBuf) -> NetFiles {
        NetFiles { dir, entered: false, slots: Default::default() }
    }

    /// Marks files opened from inside the namespace ([`NetFiles::open_all`] on a thread
    /// that entered it).
    pub fn into_entered(self) -> NetFiles {
        NetFiles { entered: true, ..self }
    }

    pub fn entered(&self) -> bool {
        self.entered
    }

    /// Where files not yet open are opened from: the namespace's representative process,
    /// which may change between samples. Kept files stay (they hold the namespace itself).
    pub fn set_dir(&mut self, dir: PathBuf) {
        if !self.entered && self.dir != dir {
            self.dir = dir;
        }
    }

    /// Opens every file now (for a thread inside the namespace, whose `/proc/thread-self`
    /// is gone once it ends); at most `fds_left` of them.
    pub fn open_all(dir: &Path, fds_left: &mut usize) -> Result<NetFiles, SourceError> {
        let mut files = NetFiles::new(dir.to_owned());
        for (slot, rel) in files.slots.iter_mut().zip(FILES) {
            if *fds_left == 0 {
                break;
            }
            *slot = KeptFile::open(&dir.join(rel))?;
            *fds_left -= usize::from(slot.is_some());
        }
        Ok(files)
    }

    /// Descriptors held.
    pub fn open_count(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// The text of one file and its path; `None` if the file does not exist (no conntrack
    /// module, IPv6 off). Opened and kept if `fds_left` allows.
    fn text(&mut self, file: usize, fds_left: &mut usize) -> Result<Option<(String, PathBuf)>, SourceError> {
        let path = self.dir.join(FILES[file]);
        let slot = &mut self.slots[file];
        if slot.is_none() && self.entered {
            return Ok(None); // not openable from this thread
        }
        if slot.is_none() && *fds_left > 0 {
            *slot = KeptFile::open(&path)?;
            *fds_left -= usize::from(slot.is_some());
        }
        let text = match slot {
            Some(kept) => {
                let mut buf = Vec::with_capacity(4096);
                Some(kept.read(&mut buf)?.to_owned())
            }
            None => crate::sources::kernel::read_optional(&path)?,
        };
        Ok(text.map(|t| (t, path)))
    }

    /// The counters every namespace is ranked by: `sockstat` (IPv4 TCP in use, TIME_WAIT,
    /// UDP) and `stat/nf_conntrack` (entries and drops). Two small files.
    pub fn read_pressure(&mut self, fds_left: &mut usize) -> Result<NsCounters, SourceError> {
        let (text, path) = self.text(SOCKSTAT, fds_left)?.ok_or_else(|| SourceError::Missing {
            path: self.dir.join(FILES[SOCKSTAT]),
            what: "/proc/PID/net/sockstat",
        })?;
        let v4 = crate::sources::procfs::sockstat::parse_v4(&text, &path)?;
        let ct = match self.text(CONNTRACK_STAT, fds_left)? {
            Some((stat, stat_path)) => Some(crate::sources::procfs::conntrack::parse_stats(&stat, &stat_path)?),
            None => None,
        };
        Ok(NsCounters {
            tcp_inuse: v4.inuse,
            time_wait: v4.tw,
            udp_inuse: crate::sources::procfs::sockstat::udp_inuse(&text, "UDP", &path)?,
            conntrack_entries: ct.as_ref().and_then(|c| c.entries),
            conntrack_drop: ct.as_ref().and_then(|c| c.drop),
            conntrack_early_drop: ct.as_ref().and_then(|c| c.early_drop),
            conntrack_insert_failed: ct.as_ref().and_then(|c| c.insert_failed),
            ..NsCounters::default()
        })
    }

    /// The rest, for the namespaces exported: IPv6 sockets (`sockstat6`), and the TCP
    /// counters of `snmp` and `netstat` (the largest file: read only for these).
    pub fn read_details(&mut self, c: &mut NsCounters, fds_left: &mut usize) -> Result<(), SourceError> {
        if let Some((text6, path6)) = self.text(SOCKSTAT6, fds_left)? {
            // Kernel numbers are added with a check: a wrapped sum would be served as true.
            let overflow = || SourceError::parse(&path6, "IPv4 + IPv6 sockets overflow a 64-bit counter");
            c.tcp_inuse = c
                .tcp_inuse
                .checked_add(crate::sources::procfs::sockstat::parse_v6_inuse(&text6, &path6)?)
                .ok_or_else(overflow)?;
            if let (Some(v4), Some(v6)) =
                (c.udp_inuse, crate::sources::procfs::sockstat::udp_inuse(&text6, "UDP6", &path6)?)
            {
                c.udp_inuse = Some(v4.checked_add(v6).ok_or_else(overflow)?);
            }
        }
        let (snmp, snmp_path) = self
            .text(SNMP, fds_left)?
            .ok_or_else(|| SourceError::Missing { path: self.dir.join(FILES[SNMP]), what: "/proc/PID/net/snmp" })?;
        let netstat = self.text(NETSTAT, fds_left)?;
        let tcp = crate::sources::procfs::snmp::parse_tcp(
            (&snmp, &snmp_path),
            netstat.as_ref().map(|(t, p)| (t.as_str(), p.as_path())),
        )?;
        (c.active_opens, c.attempt_fails) = (tcp.active_opens, tcp.attempt_fails);
        (c.listen_overflows, c.time_wait_overflow) = (tcp.listen_overflows, tcp.time_wait_overflow);
        Ok(())
    }
}

/// Every counter of the namespace whose files are under `proc_dir`, each file opened and
/// closed (nothing kept).
pub fn read_counters(proc_dir: &Path) -> Result<NsCounters, SourceError> {
    let mut files = NetFiles::new(proc_dir.to_owned());
    let mut none = 0;
    let mut c = files.read_pressure(&mut none)?;
    files.read_details(&mut c, &mut none)?;
    Ok(c)
}
