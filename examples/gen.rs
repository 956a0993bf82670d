//! Writes a users/import request of N valid users to stdout, for benchmarks:
//! `cargo run --release --example gen -- --users 1000000 > big.json`
//! `cargo run --release --example gen -- --users 1000000 --change-percent 1 --seed 7 > nightly.json`
//!
//! `benches/targets.rs` includes this file for the same generator, so the bench and
//! a hand-made file are the same input. Every user carries the B2B fields too, as the
//! ERP exports of issue 13 do (1M users ≈ 357 MB).

use std::io::{self, BufWriter, Write};

/// Which users a nightly export changed: `percent` of them, picked by `seed`.
#[derive(Clone, Copy, Default)]
pub struct Change {
    pub percent: f64,
    pub seed: u64,
}

impl Change {
    /// Whether user `i` differs from the plain export; a cheap mix of the seed and the
    /// index, so that the changed users are spread over the file, not in one run.
    pub fn picks(&self, i: u64) -> bool {
        if self.percent <= 0.0 {
            return false;
        }
        let mut x = i ^ self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        (x % 1_000_000) < (self.percent * 10_000.0) as u64
    }
}

/// Writes a request of `users` valid users numbered from `first` (emails
/// `user{n}@example.com`), one user per line.
pub fn write_request(out: &mut impl Write, first: u64, users: u64) -> io::Result<()> {
    write_request_changed(out, first, users, Change::default())
}

/// [`write_request`], with the users `change` picks carrying another balance and city
/// (what a nightly export changes).
pub fn write_request_changed(
    out: &mut impl Write,
    first: u64,
    users: u64,
    change: Change,
) -> io::Result<()> {
    out.write_all(b"{\"token\":\"bench\",\"users\":[\n")?;
    for i in first..first + users {
        if i > first {
            out.write_all(b",\n")?;
        }
        let (city, cents) = match change.picks(i) {
            true => ("Lviv", (i + 1 + change.seed) % 100),
            false => ("Kyiv", i % 100),
        };
        write!(
            out,
            r#"{{"title":"User {i}","email":"user{i}@example.com","phone":"+38063{:07}","country":"Ukraine","city":"{city}","address":"Khreschatyk St, {}","discount_card":{{"discount":{},"active":true,"date_limit":"2030-01-01","status":1}},"customer_group_id":{},"balance":{}.{cents:02},"balance_currency":"UAH","manager_id":{},"company":"Company {}","newsletter_subscription":{}}}"#,
            i % 10_000_000,
            i % 200,
            i % 50,
            1 + i % 5,
            i % 100_000,
            1 + i % 20,
            i % 5000,
            i % 2 == 0
        )?;
    }
    out.write_all(b"\n]}\n")
}

#[allow(dead_code)] // the bench includes this file for `write_request` only
fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut users: u64 = 1000;
    let mut change = Change::default();
    while let Some(arg) = args.next() {
        let value = args.next();
        match (arg.as_str(), value.as_deref().map(str::parse::<f64>)) {
            ("--users", Some(Ok(n))) => users = n as u64,
            ("--change-percent", Some(Ok(p))) => change.percent = p,
            ("--seed", Some(Ok(s))) => change.seed = s as u64,
            _ => {
                eprintln!(
                    "usage: gen [--users N] [--change-percent P --seed N]  (bad argument {arg})"
                );
                std::process::exit(2);
            }
        }
    }
    let mut out = BufWriter::new(io::stdout().lock());
    write_request_changed(&mut out, 0, users, change)?;
    out.flush()
}
