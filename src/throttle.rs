//! Login throttling: failed password checks counted per client address, per account from one
//! address, and per account overall, each over a sliding window.
//!
//! The limits are chosen so that guessing stalls while the owner keeps access: an attacker at
//! one address is stopped on an account after a few tries (and on every account after a few
//! more), which leaves the account itself open to its owner elsewhere. Only a spread-out attack
//! on one account trips the account-wide limit, and even then addresses the owner has logged in
//! from before are let through. Everything is in memory: a restart forgets it, which costs an
//! attacker a restart they cannot trigger.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use actix_web::HttpRequest;
use ipnet::IpNet;
use parking_lot::Mutex;

/// The sliding window, in seconds.
pub const WINDOW: i64 = 15 * 60;
/// Failures of one account from one address.
pub const PER_ACCOUNT_AND_ADDRESS: usize = 5;
/// Failures from one address, whatever the accounts.
pub const PER_ADDRESS: usize = 20;
/// Failures of one account, whatever the addresses (addresses it logged in from are exempt).
pub const PER_ACCOUNT: usize = 50;
/// How long an address that logged in successfully stays exempt from the account-wide limit.
const KNOWN_FOR: i64 = 30 * 24 * 3600;
/// Addresses remembered per account.
const KNOWN_PER_ACCOUNT: usize = 8;
/// Tracked keys before expired ones are pruned.
const PRUNE_ABOVE: usize = 100_000;

/// The most recent failures of one key, at most as many as its limit.
#[derive(Debug, Default)]
struct Failures(VecDeque<i64>);

impl Failures {
    fn expire(&mut self, now: i64) {
        while self.0.front().is_some_and(|&at| at <= now - WINDOW) {
            self.0.pop_front();
        }
    }

    /// Seconds until the key may try again, when it has reached `limit`.
    fn blocked_for(&mut self, limit: usize, now: i64) -> Option<u64> {
        self.expire(now);
        if self.0.len() < limit {
            return None;
        }
        let oldest = self.0.front().copied().unwrap_or(now);
        Some(u64::try_from(oldest + WINDOW - now).unwrap_or(0).max(1))
    }

    fn record(&mut self, limit: usize, now: i64) {
        self.expire(now);
        self.0.push_back(now);
        while self.0.len() > limit {
            self.0.pop_front();
        }
    }
}

#[derive(Debug, Default)]
struct State {
    by_pair: HashMap<(String, IpAddr), Failures>,
    by_address: HashMap<IpAddr, Failures>,
    by_account: HashMap<String, Failures>,
    /// Addresses each account last logged in from, with when.
    known: HashMap<String, Vec<(IpAddr, i64)>>,
}

impl State {
    fn is_known(&self, account: &str, address: IpAddr, now: i64) -> bool {
        self.known.get(account).is_some_and(|list| {
            list.iter()
                .any(|&(a, at)| a == address && at > now - KNOWN_FOR)
        })
    }

    fn prune(&mut self, now: i64) {
        let live = |f: &mut Failures| {
            f.expire(now);
            !f.0.is_empty()
        };
        self.by_pair.retain(|_, f| live(f));
        self.by_address.retain(|_, f| live(f));
        self.by_account.retain(|_, f| live(f));
        self.known.retain(|_, list| {
            list.retain(|&(_, at)| at > now - KNOWN_FOR);
            !list.is_empty()
        });
    }
}

/// Failed logins, shared by every worker.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    state: Mutex<State>,
}

impl LoginThrottle {
    /// `Err(seconds)` when `account` may not try a password from `address` now.
    pub fn check(&self, account: &str, address: IpAddr, now: i64) -> Result<(), u64> {
        let mut state = self.state.lock();
        let pair = (account.to_owned(), address);
        let mut wait = [
            state
                .by_pair
                .get_mut(&pair)
                .and_then(|f| f.blocked_for(PER_ACCOUNT_AND_ADDRESS, now)),
            state
                .by_address
                .get_mut(&address)
                .and_then(|f| f.blocked_for(PER_ADDRESS, now)),
        ]
        .into_iter()
        .flatten()
        .max();
        if !state.is_known(account, address, now) {
            let account_wait = state
                .by_account
                .get_mut(account)
                .and_then(|f| f.blocked_for(PER_ACCOUNT, now));
            wait = wait.max(account_wait);
        }
        wait.map_or(Ok(()), Err)
    }

    /// Counts a wrong password for `account` from `address`.
    pub fn failed(&self, account: &str, address: IpAddr, now: i64) {
        let mut state = self.state.lock();
        let tracked = state.by_pair.len() + state.by_address.len() + state.by_account.len();
        if tracked > PRUNE_ABOVE {
            state.prune(now);
        }
        state
            .by_pair
            .entry((account.to_owned(), address))
            .or_default()
            .record(PER_ACCOUNT_AND_ADDRESS, now);
        state
            .by_address
            .entry(address)
            .or_default()
            .record(PER_ADDRESS, now);
        state
            .by_account
            .entry(account.to_owned())
            .or_default()
            .record(PER_ACCOUNT, now);
    }

    /// A correct password: the pair starts over, and the address is known to the account.
    /// The address's own count stays, so that one valid account cannot launder guesses at
    /// others.
    pub fn succeeded(&self, account: &str, address: IpAddr, now: i64) {
        let mut state = self.state.lock();
        state.by_pair.remove(&(account.to_owned(), address));
        let list = state.known.entry(account.to_owned()).or_default();
        list.retain(|&(a, _)| a != address);
        list.push((address, now));
        if list.len() > KNOWN_PER_ACCOUNT {
            list.remove(0);
        }
    }
}

/// The address throttling counts a request under: the peer, or, when the peer is a trusted
/// proxy, the nearest address in `X-Forwarded-For` that is not one. IPv6 clients are counted
/// by /64, the block one subscriber usually holds.
pub fn client_address(req: &HttpRequest, trusted_proxies: &[IpNet]) -> IpAddr {
    let peer = req
        .peer_addr()
        .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip().to_canonical());
    let trusted = |ip: &IpAddr| trusted_proxies.iter().any(|net| net.contains(ip));
    let mut client = peer;
    if trusted(&peer) {
        let hops: Vec<&str> = req
            .headers()
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for hop in hops.iter().rev() {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip.to_canonical();
                    if !trusted(&client) {
                        break;
                    }
                }
                // A hop we cannot read was written by someone we do not trust: stop at the
                // last address we could vouch for.
                Err(_) => break,
            }
        }
    }
    match client {
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::from(octets)
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    const A: &str = "alice@example.com";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn an_account_is_throttled_at_one_address_only() {
        let throttle = LoginThrottle::default();
        let attacker = ip("203.0.113.9");
        for _ in 0..PER_ACCOUNT_AND_ADDRESS {
            assert_eq!(throttle.check(A, attacker, 1000), Ok(()));
            throttle.failed(A, attacker, 1000);
        }
        assert_eq!(throttle.check(A, attacker, 1000), Err(WINDOW as u64));
        assert_eq!(throttle.check(A, attacker, 1100), Err(WINDOW as u64 - 100));
        assert_eq!(throttle.check(A, ip("198.51.100.7"), 1000), Ok(()));
        assert_eq!(throttle.check("bob@example.com", attacker, 1000), Ok(()));
        assert_eq!(throttle.check(A, attacker, 1000 + WINDOW), Ok(()));
    }

    #[test]
    fn an_address_is_throttled_across_accounts() {
        let throttle = LoginThrottle::default();
        let attacker = ip("203.0.113.9");
        for i in 0..PER_ADDRESS {
            throttle.failed(&format!("user{i}@example.com"), attacker, 50 + i as i64);
        }
        assert_eq!(
            throttle.check("new@example.com", attacker, 100),
            Err(WINDOW as u64 - 50)
        );
        assert_eq!(
            throttle.check("new@example.com", ip("203.0.113.10"), 100),
            Ok(())
        );
        // The window slides: the oldest failure ages out first.
        assert_eq!(
            throttle.check("new@example.com", attacker, 50 + WINDOW),
            Ok(())
        );
    }

    #[test]
    fn a_spread_out_attack_spares_addresses_the_owner_used() {
        let throttle = LoginThrottle::default();
        let home = ip("192.0.2.1");
        throttle.succeeded(A, home, 0);
        for i in 0..PER_ACCOUNT {
            let bot = IpAddr::from([10, 0, (i / 250) as u8, (i % 250) as u8]);
            throttle.failed(A, bot, 10);
        }
        assert!(throttle.check(A, ip("198.51.100.1"), 20).is_err());
        assert_eq!(throttle.check(A, home, 20), Ok(()));
    }

    #[test]
    fn success_resets_the_pair_but_not_the_address() {
        let throttle = LoginThrottle::default();
        let at = ip("192.0.2.1");
        for _ in 0..PER_ACCOUNT_AND_ADDRESS {
            throttle.failed(A, at, 0);
        }
        throttle.succeeded(A, at, 1);
        assert_eq!(throttle.check(A, at, 2), Ok(()));
        for i in 0..PER_ADDRESS {
            throttle.failed(&format!("u{i}@example.com"), at, 3);
        }
        throttle.succeeded(A, at, 4);
        assert!(throttle.check(A, at, 5).is_err());
    }

    #[test]
    fn client_addresses_come_from_trusted_proxies_only() {
        let proxies: Vec<IpNet> = vec![IpNet::from(ip("10.0.0.1"))];
        let forwarded = |peer: &str| {
            TestRequest::default()
                .peer_addr(std::net::SocketAddr::new(ip(peer), 4000))
                .insert_header(("x-forwarded-for", "198.51.100.20, 203.0.113.5"))
                .to_http_request()
        };
        assert_eq!(
            client_address(&forwarded("10.0.0.1"), &proxies),
            ip("203.0.113.5")
        );
        assert_eq!(
            client_address(&forwarded("10.0.0.2"), &proxies),
            ip("10.0.0.2")
        );
        assert_eq!(client_address(&forwarded("10.0.0.1"), &[]), ip("10.0.0.1"));
        let v6 = TestRequest::default()
            .peer_addr(
                "[2001:db8:1:2:3:4:5:6]:443"
                    .parse()
                    .unwrap_or_else(|_| std::net::SocketAddr::new(ip("::1"), 1)),
            )
            .to_http_request();
        assert_eq!(client_address(&v6, &proxies), ip("2001:db8:1:2::"));
    }
}
