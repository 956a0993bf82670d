//! Writes a users/import request of N valid users to stdout, for benchmarks:
//! `cargo run --release --example gen -- --users 1000000 > big.json`
//!
//! `benches/targets.rs` includes this file for the same generator, so the bench and
//! a hand-made file are the same input.

use std::io::{self, BufWriter, Write};

/// Writes a request of `users` valid users numbered from `first` (emails
/// `user{n}@example.com`), one user per line.
pub fn write_request(out: &mut impl Write, first: u64, users: u64) -> io::Result<()> {
    out.write_all(b"{\"token\":\"bench\",\"users\":[\n")?;
    for i in first..first + users {
        if i > first {
            out.write_all(b",\n")?;
        }
        write!(
            out,
            r#"{{"title":"User {i}","email":"user{i}@example.com","phone":"+38063{:07}","country":"Ukraine","city":"Kyiv","address":"Khreschatyk St, {}","discount_card":{{"discount":{},"active":true,"date_limit":"2030-01-01","status":1}},"balance":{}.{:02},"balance_currency":"UAH","newsletter_subscription":{}}}"#,
            i % 10_000_000,
            i % 200,
            i % 50,
            i % 100_000,
            i % 100,
            i % 2 == 0
        )?;
    }
    out.write_all(b"\n]}\n")
}

#[allow(dead_code)] // the bench includes this file for `write_request` only
fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut users: u64 = 1000;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--users" => users = args.next().and_then(|n| n.parse().ok()).unwrap_or(users),
            other => {
                eprintln!("usage: gen [--users N]  (unknown argument {other})");
                std::process::exit(2);
            }
        }
    }
    let mut out = BufWriter::new(io::stdout().lock());
    write_request(&mut out, 0, users)?;
    out.flush()
}
