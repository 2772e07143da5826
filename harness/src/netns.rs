//! Real network partitions: each region runs in its own Linux network namespace, joined to
//! the root namespace (home cluster, reconciler) by a veth pair. Cutting a region takes its
//! host-side link down, so nothing passes either way; healing brings it back up.
//!
//! Brokers start inside a namespace with `ip netns exec`. Kafka clients (processors,
//! publishers) run in this process: the thread that creates a client first enters the
//! namespace (`setns`), and librdkafka's own threads, started by it, inherit it.
//!
//! Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) and `ip` from iproute2. Where namespaces
//! cannot be created, `Netns::create` fails with a message that says why.

use std::process::Command;

/// The root-namespace address every namespace reaches the home cluster on.
pub struct HomeAddr {
    pub ip: String,
}

pub struct Netns {
    pub name: String,
    /// The host side of the veth pair (taken down to cut).
    host_if: String,
    /// This namespace's address (its broker listens here).
    pub ip: String,
    host_ip: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("network namespaces unavailable: cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "network namespaces unavailable: `ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A per-process second octet, so two harnesses on one machine do not collide.
fn octet() -> u32 {
    100 + std::process::id() % 100
}

fn tag() -> u32 {
    std::process::id() % 100_000
}

impl HomeAddr {
    /// An extra address on the root namespace's loopback, routed to from every region
    /// (each namespace's default route leads to the root namespace).
    pub fn create() -> Result<HomeAddr, String> {
        let ip_addr = format!("10.{}.250.1", octet());
        let _ = ip(&["addr", "del", &format!("{ip_addr}/32"), "dev", "lo"]);
        ip(&["addr", "add", &format!("{ip_addr}/32"), "dev", "lo"])?;
        Ok(HomeAddr { ip: ip_addr })
    }
}

impl Drop for HomeAddr {
    fn drop(&mut self) {
        let _ = ip(&["addr", "del", &format!("{}/32", self.ip), "dev", "lo"]);
    }
}

impl Netns {
    /// Namespace number `idx` (1..=200) named after `region`, linked to the root namespace.
    pub fn create(idx: u8, region: &str) -> Result<Netns, String> {
        let t = tag();
        let name = format!("rf{t}-{region}");
        let host_if = format!("rf{t}h{idx}");
        let ns_if = format!("rf{t}n{idx}");
        let (host_ip, ns_ip) = (
            format!("10.{}.{idx}.1", octet()),
            format!("10.{}.{idx}.2", octet()),
        );
        let _ = ip(&["netns", "del", &name]);
        let _ = ip(&["link", "del", &host_if]);
        ip(&["netns", "add", &name])?;
        let ns = Netns {
            name: name.clone(),
            host_if: host_if.clone(),
            ip: ns_ip.clone(),
            host_ip: host_ip.clone(),
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ])?;
        ip(&["link", "set", &ns_if, "netns", &name])?;
        ip(&["addr", "add", &format!("{host_ip}/24"), "dev", &host_if])?;
        ip(&["link", "set", &host_if, "up"])?;
        let inside = |args: &[&str]| {
            let mut v = vec!["netns", "exec", &name, "ip"];
            v.extend_from_slice(args);
            ip(&v)
        };
        inside(&["link", "set", "lo", "up"])?;
        inside(&["addr", "add", &format!("{ns_ip}/24"), "dev", &ns_if])?;
        inside(&["link", "set", &ns_if, "up"])?;
        inside(&["route", "add", "default", "via", &host_ip])?;
        Ok(ns)
    }

    /// Cut the namespace off: nothing passes between it and the root namespace.
    pub fn cut(&self) -> Result<(), String> {
        ip(&["link", "set", &self.host_if, "down"])
    }

    /// Heal the cut.
    pub fn heal(&self) -> Result<(), String> {
        ip(&["link", "set", &self.host_if, "up"])?;
        // The default route inside survives the carrier loss; make sure of it.
        ip(&[
            "netns",
            "exec",
            &self.name,
            "ip",
            "route",
            "replace",
            "default",
            "via",
            &self.host_ip,
        ])
    }

    /// Move the calling thread into this namespace (threads it starts inherit it).
    pub fn enter(&self) -> Result<(), String> {
        enter(&self.name)
    }
}

/// Move the calling thread into network namespace `name`.
pub fn enter(name: &str) -> Result<(), String> {
    let path = format!("/var/run/netns/{name}");
    let f = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("setns({path}): {e}"))
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.host_if]);
    }
}

/// Drops every TCP packet this host's network namespace sends to `port` while it lives
/// (nftables, an output-hook table of its own): the home cluster "goes away" for every
/// client in the test process, and comes back when the block is dropped. Needs root and
/// nftables (`scripts/setup.sh` installs it).
pub struct PortBlock {
    table: String,
}

impl PortBlock {
    pub fn new(port: u16) -> Result<PortBlock, String> {
        let table = format!("rfblock{}x{port}", std::process::id());
        let run = |args: &[&str]| -> Result<(), String> {
            let out = std::process::Command::new("nft")
                .args(args)
                .output()
                .map_err(|e| format!("nft: {e} (apt package nftables)"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "nft {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        run(&["add", "table", "inet", &table])?;
        let block = PortBlock { table };
        run(&[
            "add",
            "chain",
            "inet",
            &block.table,
            "out",
            "{ type filter hook output priority 0 ; }",
        ])?;
        run(&[
            "add",
            "rule",
            "inet",
            &block.table,
            "out",
            "tcp",
            "dport",
            &port.to_string(),
            "drop",
        ])?;
        Ok(block)
    }
}

impl Drop for PortBlock {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "inet", &self.table])
            .output();
    }
}
