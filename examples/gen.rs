//! Writes a users/import request of N valid users to stdout, for benchmarks:
//! `cargo run --release --example gen -- --users 1000000 > big.json`

use std::io::{self, BufWriter, Write};

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
    out.write_all(b"{\"token\":\"bench\",\"users\":[\n")?;
    for i in 0..users {
        if i > 0 {
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
    out.write_all(b"\n]}\n")?;
    out.flush()
}
