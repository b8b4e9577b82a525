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
use sha2::{Digest, Sha256};

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
/// Tracked keys above which expired ones are pruned (at most once per [`PRUNE_EVERY`]).
const PRUNE_ABOVE: usize = 100_000;
/// Tracked keys above which, after pruning, keys with a single failure are dropped too.
const HARD_CAP: usize = 400_000;
const PRUNE_EVERY: i64 = 60;

/// An account as the throttle knows it: a digest of the normalised email, so that keys have a
/// fixed size however long the submitted string.
type Account = [u8; 16];

fn account_key(email: &str) -> Account {
    let digest = Sha256::digest(email.as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

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

    /// Takes back one failure recorded at `at` (a reservation that turned out a success).
    fn withdraw(&mut self, at: i64) {
        if let Some(index) = self.0.iter().rposition(|&t| t == at) {
            self.0.remove(index);
        }
    }
}

#[derive(Debug, Default)]
struct State {
    by_pair: HashMap<(Account, IpAddr), Failures>,
    by_address: HashMap<IpAddr, Failures>,
    by_account: HashMap<Account, Failures>,
    /// Addresses each account last logged in from, with when.
    known: HashMap<Account, Vec<(IpAddr, i64)>>,
    last_prune: i64,
}

impl State {
    fn is_known(&self, account: &Account, address: IpAddr, now: i64) -> bool {
        self.known.get(account).is_some_and(|list| {
            list.iter()
                .any(|&(a, at)| a == address && at > now - KNOWN_FOR)
        })
    }

    fn tracked(&self) -> usize {
        self.by_pair.len() + self.by_address.len() + self.by_account.len() + self.known.len()
    }

    /// Keeps the maps bounded: expired keys go first; under a flood of fresh keys, those with a
    /// single failure go too (they are the cheapest to forget).
    fn prune(&mut self, now: i64) {
        if self.tracked() <= PRUNE_ABOVE || now - self.last_prune < PRUNE_EVERY {
            return;
        }
        self.last_prune = now;
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
        if self.tracked() > HARD_CAP {
            self.by_pair.retain(|_, f| f.0.len() > 1);
            self.by_address.retain(|_, f| f.0.len() > 1);
            self.by_account.retain(|_, f| f.0.len() > 1);
        }
    }
}

/// Failed logins, shared by every worker.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    state: Mutex<State>,
}

/// A password check under way: counted as a failure from the moment it starts, so that checks
/// sent in parallel cannot all slip under a limit, and taken back if it succeeds.
#[derive(Debug)]
#[must_use = "finish the attempt with its outcome"]
pub struct Attempt {
    account: Account,
    address: IpAddr,
    at: i64,
}

impl LoginThrottle {
    /// Starts a password check for `email` from `address`, or `Err(seconds)` when it may not
    /// try now.
    pub fn begin(&self, email: &str, address: IpAddr, now: i64) -> Result<Attempt, u64> {
        let account = account_key(email);
        let mut state = self.state.lock();
        state.prune(now);
        let pair = (account, address);
        let mut wait = state
            .by_pair
            .get_mut(&pair)
            .and_then(|f| f.blocked_for(PER_ACCOUNT_AND_ADDRESS, now));
        // Where the owner has logged in before, only the pair limit applies: neither a crowd
        // behind the same NAT nor a distributed attack on the account locks them out there.
        if !state.is_known(&account, address, now) {
            let by_address = state
                .by_address
                .get_mut(&address)
                .and_then(|f| f.blocked_for(PER_ADDRESS, now));
            let by_account = state
                .by_account
                .get_mut(&account)
                .and_then(|f| f.blocked_for(PER_ACCOUNT, now));
            wait = wait.max(by_address).max(by_account);
        }
        if let Some(wait) = wait {
            return Err(wait);
        }
        state
            .by_pair
            .entry(pair)
            .or_default()
            .record(PER_ACCOUNT_AND_ADDRESS, now);
        state
            .by_address
            .entry(address)
            .or_default()
            .record(PER_ADDRESS, now);
        state
            .by_account
            .entry(account)
            .or_default()
            .record(PER_ACCOUNT, now);
        Ok(Attempt {
            account,
            address,
            at: now,
        })
    }

    /// Ends a check. A wrong password stays counted. A right one is taken back, the pair
    /// starts over, and the address becomes known to the account.
    pub fn finish(&self, attempt: Attempt, succeeded: bool, now: i64) {
        if !succeeded {
            return;
        }
        let Attempt {
            account,
            address,
            at,
        } = attempt;
        let mut state = self.state.lock();
        state.by_pair.remove(&(account, address));
        if let Some(failures) = state.by_address.get_mut(&address) {
            failures.withdraw(at);
        }
        if let Some(failures) = state.by_account.get_mut(&account) {
            failures.withdraw(at);
        }
        let list = state.known.entry(account).or_default();
        list.retain(|&(a, _)| a != address);
        list.push((address, now));
        if list.len() > KNOWN_PER_ACCOUNT {
            list.remove(0);
        }
    }
}

/// One `X-Forwarded-For` hop: an address, perhaps with a port or in brackets, as proxies write
/// them (`203.0.113.5`, `203.0.113.5:4711`, `[2001:db8::1]`, `[2001:db8::1]:443`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            hop.strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .and_then(|h| h.parse().ok())
        })
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
            match parse_hop(hop) {
                Some(ip) => {
                    client = ip.to_canonical();
                    if !trusted(&client) {
                        break;
                    }
                }
                // A hop we cannot read was written by someone we do not trust: stop at the
                // last address we could vouch for.
                None => break,
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

    /// A whole password check that fails.
    fn fail(throttle: &LoginThrottle, email: &str, address: IpAddr, now: i64) {
        if let Ok(attempt) = throttle.begin(email, address, now) {
            throttle.finish(attempt, false, now);
        }
    }

    fn succeed(throttle: &LoginThrottle, email: &str, address: IpAddr, now: i64) -> bool {
        throttle
            .begin(email, address, now)
            .map(|attempt| throttle.finish(attempt, true, now))
            .is_ok()
    }

    fn wait(throttle: &LoginThrottle, email: &str, address: IpAddr, now: i64) -> Option<u64> {
        throttle.begin(email, address, now).err()
    }

    #[test]
    fn an_account_is_throttled_at_one_address_only() {
        let throttle = LoginThrottle::default();
        let attacker = ip("203.0.113.9");
        for _ in 0..PER_ACCOUNT_AND_ADDRESS {
            fail(&throttle, A, attacker, 1000);
        }
        assert_eq!(wait(&throttle, A, attacker, 1000), Some(WINDOW as u64));
        assert_eq!(
            wait(&throttle, A, attacker, 1100),
            Some(WINDOW as u64 - 100)
        );
        assert!(succeed(&throttle, A, ip("198.51.100.7"), 1000));
        assert_eq!(wait(&throttle, "bob@example.com", attacker, 1000), None);
        assert_eq!(wait(&throttle, A, attacker, 1000 + WINDOW), None);
    }

    #[test]
    fn checks_in_parallel_count_before_they_finish() {
        let throttle = LoginThrottle::default();
        let attacker = ip("203.0.113.9");
        let started: Vec<Attempt> = (0..10)
            .filter_map(|_| throttle.begin(A, attacker, 5).ok())
            .collect();
        assert_eq!(started.len(), PER_ACCOUNT_AND_ADDRESS);
        // One of them was right after all: it is taken back, and the pair starts over.
        let mut started = started.into_iter();
        if let Some(first) = started.next() {
            throttle.finish(first, true, 6);
        }
        for attempt in started {
            throttle.finish(attempt, false, 6);
        }
        assert_eq!(wait(&throttle, A, attacker, 7), None);
    }

    #[test]
    fn an_address_is_throttled_across_accounts() {
        let throttle = LoginThrottle::default();
        let attacker = ip("203.0.113.9");
        for i in 0..PER_ADDRESS {
            fail(
                &throttle,
                &format!("user{i}@example.com"),
                attacker,
                50 + i as i64,
            );
        }
        assert_eq!(
            wait(&throttle, "new@example.com", attacker, 100),
            Some(WINDOW as u64 - 50)
        );
        assert_eq!(
            wait(&throttle, "new@example.com", ip("203.0.113.10"), 100),
            None
        );
        // The window slides: the oldest failure ages out first.
        assert_eq!(
            wait(&throttle, "new@example.com", attacker, 50 + WINDOW),
            None
        );
    }

    #[test]
    fn known_addresses_are_spared_the_address_and_account_limits() {
        let throttle = LoginThrottle::default();
        let home = ip("192.0.2.1");
        assert!(succeed(&throttle, A, home, 0));
        // A spread-out attack on the account...
        for i in 0..PER_ACCOUNT {
            let bot = IpAddr::from([10, 0, (i / 250) as u8, (i % 250) as u8]);
            fail(&throttle, A, bot, 10);
        }
        assert!(wait(&throttle, A, ip("198.51.100.1"), 20).is_some());
        assert_eq!(wait(&throttle, A, home, 20), None);
        // ...and a neighbour behind the same NAT guessing at other accounts.
        for i in 0..PER_ADDRESS {
            fail(&throttle, &format!("u{i}@example.com"), home, 30);
        }
        assert!(wait(&throttle, "other@example.com", home, 31).is_some());
        assert_eq!(wait(&throttle, A, home, 31), None);
    }

    #[test]
    fn success_resets_the_pair_but_not_the_address() {
        let throttle = LoginThrottle::default();
        let at = ip("192.0.2.1");
        for _ in 0..PER_ACCOUNT_AND_ADDRESS - 1 {
            fail(&throttle, A, at, 0);
        }
        assert!(succeed(&throttle, A, at, 1));
        for _ in 0..PER_ACCOUNT_AND_ADDRESS - 1 {
            fail(&throttle, A, at, 2);
        }
        assert_eq!(wait(&throttle, A, at, 2), None);
        for i in 0..PER_ADDRESS {
            fail(&throttle, &format!("u{i}@example.com"), at, 3);
        }
        assert!(wait(&throttle, "stranger@example.com", at, 5).is_some());
    }

    #[test]
    fn a_flood_of_fresh_keys_stays_bounded() {
        let throttle = LoginThrottle::default();
        let mut now = 0;
        for i in 0..(HARD_CAP as u32) {
            let address = IpAddr::from(i.to_be_bytes());
            fail(&throttle, &format!("{i}@example.com"), address, now);
            if i % 50_000 == 0 {
                now += PRUNE_EVERY;
            }
        }
        assert!(throttle.state.lock().tracked() <= HARD_CAP + 3 * 50_000 + 3);
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
        let with_port = TestRequest::default()
            .peer_addr(std::net::SocketAddr::new(ip("10.0.0.1"), 4000))
            .insert_header(("x-forwarded-for", "203.0.113.6:5678"))
            .to_http_request();
        assert_eq!(client_address(&with_port, &proxies), ip("203.0.113.6"));
        assert_eq!(parse_hop("[2001:db8::1]"), Some(ip("2001:db8::1")));
        assert_eq!(parse_hop(" [2001:db8::1]:443 "), Some(ip("2001:db8::1")));
        assert_eq!(parse_hop("unknown"), None);
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
