//! Writing every stored user out, sorted by email, in one of three formats.

use crate::model::{StoredUser, UserData};
use crate::store::{Store, StoreError};
use std::io::{self, Write};

#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
pub enum Format {
    /// A users/import request, `{"users": [...]}`, that re-imports to the same store.
    #[default]
    Json,
    /// One stored record per line, with `created_at`, `updated_at` and `source_file`.
    Ndjson,
    /// A spreadsheet: one row per user, a header row first.
    Csv,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the export: {0}")]
    Io(#[from] io::Error),
    #[error("cannot write the export: {0}")]
    Csv(#[from] csv::Error),
}

pub fn export<W: Write>(store: &Store, format: Format, out: W) -> Result<(), ExportError> {
    match format {
        Format::Json => json(store, out),
        Format::Ndjson => ndjson(store, out),
        Format::Csv => csv_rows(store, out),
    }
}

fn json<W: Write>(store: &Store, mut out: W) -> Result<(), ExportError> {
    out.write_all(b"{\"users\": [")?;
    let mut first = true;
    for user in store.users() {
        let user = user?;
        out.write_all(if first { b"\n" } else { b",\n" })?;
        first = false;
        serde_json::to_writer(&mut out, &user.data).map_err(io::Error::from)?;
    }
    out.write_all(if first { b"]}\n" } else { b"\n]}\n" })?;
    out.flush()?;
    Ok(())
}

fn ndjson<W: Write>(store: &Store, mut out: W) -> Result<(), ExportError> {
    for user in store.users() {
        serde_json::to_writer(&mut out, &user?.flat()).map_err(io::Error::from)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// The CSV columns, in order.
pub const CSV_HEADER: [&str; 22] = [
    "email",
    "title",
    "phone",
    "country",
    "city",
    "address",
    "discount",
    "discount_active",
    "discount_date_limit",
    "discount_status",
    "customer_group_id",
    "balance",
    "balance_currency",
    "manager_id",
    "site_link",
    "company",
    "role",
    "newsletter_subscription",
    "note",
    "created_at",
    "updated_at",
    "source_file",
];

fn csv_rows<W: Write>(store: &Store, out: W) -> Result<(), ExportError> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(CSV_HEADER)?;
    for user in store.users() {
        w.write_record(csv_row(&user?))?;
    }
    w.flush()?;
    Ok(())
}

/// A free-text cell, made inert for spreadsheets: a cell that starts with `=`, `+`,
/// `-`, `@`, a tab or a carriage return is read as a formula by Excel and
/// LibreOffice, and the text comes from whoever filled in a customer form. A leading
/// `'` makes them show it as text (OWASP's advice for CSV injection). Typed columns
/// (email, phone, numbers, dates, links) cannot hold a formula and stay as they are.
fn inert(text: String) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text
    }
}

fn csv_row(user: &StoredUser) -> Vec<String> {
    fn opt<T: ToString>(v: &Option<T>) -> String {
        v.as_ref().map(T::to_string).unwrap_or_default()
    }
    fn typed<T: Into<String> + Clone>(v: &Option<T>) -> String {
        v.clone().map(Into::into).unwrap_or_default()
    }
    fn text(v: &Option<String>) -> String {
        inert(typed(v))
    }
    let d: &UserData = &user.data;
    let card = d.discount_card.clone().unwrap_or_default();
    vec![
        d.email.to_string(),
        inert(d.title.clone()),
        typed(&d.phone),
        text(&d.country),
        text(&d.city),
        text(&d.address),
        card.discount
            .map(|n| n.as_str().to_owned())
            .unwrap_or_default(),
        opt(&card.active),
        opt(&card.date_limit),
        card.status
            .map(|s| u8::from(s).to_string())
            .unwrap_or_default(),
        opt(&d.customer_group_id),
        d.balance
            .as_ref()
            .map(|n| n.as_str().to_owned())
            .unwrap_or_default(),
        typed(&d.balance_currency),
        opt(&d.manager_id),
        typed(&d.site_link),
        text(&d.company),
        text(&d.role),
        opt(&d.newsletter_subscription),
        text(&d.note),
        user.meta.created_at.to_rfc3339(),
        user.meta.updated_at.to_rfc3339(),
        inert(user.meta.source_file.clone()),
    ]
}
