//! `userdrop schema`: a JSON Schema (draft 2020-12) of the request file, so that export
//! scripts can check a file in an editor or CI before it reaches the inbox.
//!
//! Two levels come from one generator. The strict level is derived from the types in
//! `model` and the length limits in `validate`, so it follows them when they change; the
//! value types' rules are written here as patterns. It aims to accept every user the
//! daemon accepts and to reject as much of the rest as JSON Schema can say; what it
//! cannot say is in [`NOT_CHECKED`] and in the README. The default level, the request
//! format, is the strict one with every value rule taken out (see [`keep_format`]), so
//! the two cannot drift apart on keys or types.

use crate::model::{CardStatus, Currency, Email, Number, Phone, SiteLink, UserData};
use crate::validate::{FIELDS_MAX, Types};
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::{Value, json};
use std::borrow::Cow;

/// What `userdrop` checks that this schema does not; published in the schema's own
/// description so that a "valid" verdict is read for what it is.
fn not_checked(types: Types) -> String {
    let by_types = match types {
        Types::Strict => {
            "integers written with a fraction or exponent (1.0, 1e2), which the daemon \
             refuses; "
        }
        Types::Lenient => LENIENT_NOT_CHECKED,
    };
    format!(
        "Not checked by this schema (the daemon checks them): the same email twice in \
         one file; a key repeated within one object; {by_types}numbers too large for a \
         64-bit float (1e400); the exact-decimal edge of discount (a value that rounds \
         to 100 as a float but is above it); site_link is only checked to start with \
         http: or https: and name something, not parsed as a URL; the token's value."
    )
}

/// The gaps the lenient forms add: JSON Schema compares numbers by value, and the
/// range of a string of digits is beyond a pattern that stays readable.
const LENIENT_NOT_CHECKED: &str = "0 or 1 written with a fraction or exponent (1.0) for \
    a boolean, which the daemon refuses; ids and card statuses beyond 64 bits (a string \
    of 20 digits, 1e30); a discount string with an exponent (\"1e1\"), checked only to be \
    a number; ";

/// Whitespace as Rust's `str::trim` sees it (Unicode White_Space). Spelled out because
/// `\s` is a slightly different set in JavaScript (editors) and in Rust's regex crate.
const WS: &str = r"[\t-\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]";
const NOT_WS: &str = r"[^\t-\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]";

/// A pattern for a string that, once trimmed, is `core`, or is empty when `blank_ok`
/// (an optional field given as a blank string counts as absent, SPEC §1).
fn trimmed(core: &str, blank_ok: bool) -> String {
    let optional = if blank_ok { "?" } else { "" };
    format!("^{WS}*(?:{core}){optional}{WS}*$")
}

/// A pattern for text of at most `max` characters after trimming. Between leading and
/// trailing whitespace at most `max` characters remain, and whatever is not whitespace
/// lies among them; a mandatory field must have one that is not.
fn text_pattern(max: usize, mandatory: bool) -> String {
    if mandatory {
        let rest = max.saturating_sub(1);
        format!(r"^{WS}*{NOT_WS}[\s\S]{{0,{rest}}}{WS}*$")
    } else {
        format!(r"^{WS}*[\s\S]{{0,{max}}}{WS}*$")
    }
}

/// Leap years: divisible by 4, and centuries only when divisible by 400.
const LEAP_YEAR: &str =
    "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)";

/// A `YYYY-MM-DD` that exists in the proleptic Gregorian calendar, as chrono reads it.
fn iso_date() -> String {
    let common = "[0-9]{4}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])\
        |(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)";
    format!("{common}|{LEAP_YEAR}-02-29")
}

/// The same days written `DD.MM.YYYY`.
fn day_first_date() -> String {
    let common = concat!(
        r"(?:(?:0[1-9]|1[0-9]|2[0-8])\.(?:0[1-9]|1[0-2])|(?:29|30)\.(?:0[13-9]|1[0-2])",
        r"|31\.(?:0[13578]|1[02]))\.[0-9]{4}",
    );
    format!(r"{common}|29\.02\.{LEAP_YEAR}")
}

fn date_pattern() -> String {
    trimmed(&iso_date(), true)
}

/// A users/import request file, as userdrop reads it from its inbox. Keys other than
/// token and users are ignored.
#[derive(JsonSchema)]
#[schemars(title = "userdrop users/import request")]
// Only its schema is used: the daemon streams the file instead (see `request`).
#[allow(dead_code)]
struct Request {
    /// Must match one of the daemon's configured tokens; optional and ignored when it
    /// has none.
    // Not `Option`: `null` is not a token, and is refused once tokens are configured.
    #[schemars(with = "String")]
    token: Option<String>,
    /// The users to add or update (keyed by email), in order. A user with any problem
    /// is rejected whole; the others are still applied.
    users: Vec<UserData>,
}

/// Which of the two schemas `userdrop schema` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// The default: keys and JSON types only, so that a well-formed request with a
    /// user the daemon would reject (like the platform's own example) still passes.
    Format,
    /// `--strict`: every per-user rule JSON Schema can express.
    Strict,
}

/// Said by the request format about itself.
fn format_note(types: Types) -> String {
    let by_types = match types {
        Types::Strict => {
            "integers written with a fraction or exponent (1.0, 1e2), which the daemon \
             refuses; "
        }
        Types::Lenient => LENIENT_NOT_CHECKED,
    };
    format!(
        "Request format (userdrop schema): the file's shape, the known keys and each \
         field's JSON type, with null only where it clears a field. A file that passes \
         is a users/import request whose users the daemon judges one by one; none is \
         rejected for a wrong type or an unknown key, but a user may still be rejected \
         by a value rule. The descriptions state those rules; userdrop schema --strict \
         also checks them: mandatory title and email, the shapes of email, phone, \
         balance_currency, site_link and date_limit, the ranges of discount and the \
         ids, the card status (1, 2, 3) and the length limits. Not checked at either \
         level: {by_types}numbers too large for a 64-bit float (1e400); a key repeated \
         within one object; the token's value."
    )
}

/// Said by the schema of `--types lenient` about itself, before the level's note.
const LENIENT_NOTE: &str = "Lenient (userdrop schema --types lenient): the requests \
    userdrop --types lenient reads. Besides each field's own JSON type it takes \
    customer_group_id, manager_id and discount_card.status as a string of digits or \
    with a zero fraction (\"3\", 3.0); discount and balance as a string holding a JSON \
    number (\"-1250.75\"); active and newsletter_subscription as 0, 1, \"0\", \"1\", \
    \"true\" or \"false\"; [] for no discount_card; date_limit as DD.MM.YYYY, or \
    YYYY-MM-DD followed by a space or T and a time; a phone with 00 in place of the \
    leading + and Unicode spaces (a no-break space) between its digits. Every rule \
    applies to the value read.";

/// Said by the strict schema about itself, before [`NOT_CHECKED`].
const STRICT_NOTE: &str = "Strict (userdrop schema --strict): the request format (keys, \
    JSON types) plus every per-user rule JSON Schema can express: mandatory title and \
    email, the shapes of email, phone, balance_currency, site_link and date_limit, the \
    ranges of discount and the ids, the card status and the length limits after \
    trimming. A file that passes gets no user rejected for those rules. The default \
    userdrop schema checks only the request format, so a well-formed file with a bad \
    user still passes it.";

/// The schema `userdrop schema` prints at `level`, for the daemon's `types`.
pub fn request_schema(level: Level, types: Types) -> Value {
    let mut schema = strict_schema();
    if types == Types::Lenient {
        loosen(&mut schema);
    }
    let note = match level {
        Level::Format => {
            keep_format(&mut schema, true);
            format_note(types)
        }
        Level::Strict => format!("{STRICT_NOTE}\n\n{}", not_checked(types)),
    };
    let note = match types {
        Types::Strict => note,
        Types::Lenient => format!("{LENIENT_NOTE}\n\n{note}"),
    };
    if let Some(Value::String(description)) = schema.get_mut("description") {
        description.push_str("\n\n");
        description.push_str(&note);
    }
    schema
}

/// An id as lenient mode reads it from a string: 1 or more, at most 20 digits (a u64).
const ID_DIGITS: &str = "0*[1-9][0-9]{0,19}";

/// A JSON number (RFC 8259 §6), as a string holding one must be written.
const JSON_NUMBER: &str = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?";

/// A discount in a string: 0 to 100 exactly when written without an exponent (as the
/// daemon judges it on the decimal text), any number with one.
const PERCENT_TEXT: &str = r"-0(?:\.0+)?|(?:0|[1-9][0-9]?)(?:\.[0-9]+)?|100(?:\.0+)?|-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?[eE][+-]?[0-9]+";

/// The separators a lenient phone may have: the strict ones and Unicode's space
/// separators (category Zs), as `validate` takes them.
const PHONE_SEPARATOR: &str = r"[ .()\u00A0\u1680\u2000-\u200A\u202F\u205F\u3000-]";

/// A time after a date: `HH:MM[:SS[.fraction]]` and an optional zone, the grammar
/// `validate` reads.
const TIME: &str = r"(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,9})?)?(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):?[0-5][0-9])?";

/// Widens the strict schema to what `--types lenient` reads (SPEC §1, "Loose
/// producers"): each field also takes its loose forms, each under the field's rule.
fn loosen(schema: &mut Value) {
    let string = |core: &str| json!({"type": "string", "pattern": trimmed(core, false)});
    // An integer type, so that the request format keeps a type here too.
    let boolean = || {
        vec![
            json!({"type": "integer", "enum": [0, 1]}),
            string("0|1|true|false"),
        ]
    };
    let widened = [
        (
            "/$defs/UserData/properties/customer_group_id",
            vec![string(ID_DIGITS)],
        ),
        (
            "/$defs/UserData/properties/manager_id",
            vec![string(ID_DIGITS)],
        ),
        (
            "/$defs/UserData/properties/balance",
            vec![string(JSON_NUMBER)],
        ),
        (
            "/$defs/UserData/properties/newsletter_subscription",
            boolean(),
        ),
        // `items: false` rather than `maxItems: 0`: the format keeps it, so that even
        // there only the empty array passes.
        (
            "/$defs/UserData/properties/discount_card",
            vec![json!({"type": "array", "items": false})],
        ),
        (
            "/$defs/DiscountCard/properties/discount",
            vec![string(PERCENT_TEXT)],
        ),
        ("/$defs/DiscountCard/properties/active", boolean()),
        ("/$defs/CardStatus", vec![string("0*[1-3]")]),
    ];
    for (pointer, alternatives) in widened {
        if let Some(field) = schema.pointer_mut(pointer) {
            widen(field, alternatives);
        }
    }
    let phone = format!(r"(?:\+|00){PHONE_SEPARATOR}*(?:[0-9]{PHONE_SEPARATOR}*){{7,15}}");
    let date = format!("(?:{})(?:[ T]{TIME})?|{}", iso_date(), day_first_date());
    for (pointer, pattern, description) in [
        (
            "/$defs/Phone",
            trimmed(&phone, true),
            "With the country code: + (or 00) then 7 to 15 digits; spaces (Unicode's \
             no-break and other spaces too), dashes, dots and parentheses may separate \
             them and are removed when stored.",
        ),
        (
            "/$defs/CalendarDate",
            trimmed(&date, true),
            "A day that exists (leap years included): YYYY-MM-DD, optionally followed \
             by a space or T and a time (HH:MM, :SS, a fraction, a zone), or DD.MM.YYYY.",
        ),
    ] {
        if let Some(Value::Object(def)) = schema.pointer_mut(pointer) {
            def.insert("pattern".into(), pattern.into());
            def.insert("description".into(), description.into());
        }
    }
    if let Some(user) = schema.pointer_mut("/$defs/UserData/description") {
        *user = Value::from(
            "One user. title and email are mandatory; every other field is optional. \
             A field given as null clears the stored value (not allowed for title and \
             email); a string field that is blank after trimming counts as absent. \
             Strings are trimmed; types are lenient (see the schema's description).",
        );
    }
}

/// Lets `field` also take `alternatives`, its description kept outside them.
fn widen(field: &mut Value, alternatives: Vec<Value>) {
    let Value::Object(map) = field else {
        return;
    };
    let description = map.remove("description");
    let mut any_of = match map.remove("anyOf") {
        // Already a choice (a `$ref` or null): one more branch.
        Some(Value::Array(branches)) if map.is_empty() => branches,
        Some(other) => {
            map.insert("anyOf".into(), other);
            vec![Value::Object(std::mem::take(map))]
        }
        None => vec![Value::Object(std::mem::take(map))],
    };
    any_of.extend(alternatives);
    map.insert("anyOf".into(), Value::Array(any_of));
    if let Some(description) = description {
        map.insert("description".into(), description);
    }
}

/// The generated schema with the length limits of `validate` added as patterns.
fn strict_schema() -> Value {
    let generator = SchemaSettings::draft2020_12().into_generator();
    let mut schema = generator.into_root_schema_for::<Request>().to_value();
    // `with = "String"` made the token look mandatory; the daemon takes a file without.
    if let Some(Value::Array(required)) = schema.get_mut("required") {
        required.retain(|name| name != "token");
    }
    if let Some(user) = schema.pointer_mut("/$defs/UserData") {
        user["description"] = Value::from(
            "One user. title and email are mandatory; every other field is optional. \
             A field given as null clears the stored value (not allowed for title and \
             email); a string field that is blank after trimming counts as absent. \
             Strings are trimmed; types are strict (\"3\" is not a number).",
        );
        if let Some(Value::Object(properties)) = user.get_mut("properties") {
            for (field, max) in FIELDS_MAX {
                if let Some(Value::Object(property)) = properties.get_mut(field) {
                    let mandatory = field == "title";
                    property.insert("pattern".into(), text_pattern(max, mandatory).into());
                    let limit = format!(" At most {max} characters after trimming.");
                    match property.get_mut("description") {
                        Some(Value::String(d)) => d.push_str(&limit),
                        _ => {
                            property.insert("description".into(), limit.trim().into());
                        }
                    }
                }
            }
        }
    }
    unwrap_doc_lines(&mut schema);
    schema
}

/// The keywords the request format keeps: structure, types and annotations. A list of
/// what stays rather than of what goes, so that a rule the strict schema gains later
/// (a `multipleOf`, a `not`) stays out of the format without anyone remembering to
/// strip it. `oneOf`, `not` and `if` are left out on purpose: loosening their
/// subschemas could make them refuse more, not less.
const FORMAT_KEYWORDS: [&str; 11] = [
    "$schema",
    "$defs",
    "$ref",
    "title",
    "description",
    "type",
    "properties",
    "additionalProperties",
    "items",
    "anyOf",
    "allOf",
];

/// Turns the strict schema into the request format by keeping only [`FORMAT_KEYWORDS`]
/// all the way down. `required` survives only at the top, where `users` is part of the
/// format; inside a user, a missing title is a value rule (code 1), not a bad file.
fn keep_format(schema: &mut Value, top: bool) {
    let Value::Object(map) = schema else {
        // `true`/`false` schemas carry no value rule.
        return;
    };
    map.retain(|key, _| FORMAT_KEYWORDS.contains(&key.as_str()) || (top && key == "required"));
    for (key, sub) in map.iter_mut() {
        match (key.as_str(), sub) {
            ("$defs" | "properties", Value::Object(named)) => {
                named.values_mut().for_each(|s| keep_format(s, false));
            }
            ("anyOf" | "allOf", Value::Array(list)) => {
                list.iter_mut().for_each(|s| keep_format(s, false));
            }
            ("items" | "additionalProperties", sub) => keep_format(sub, false),
            _ => {}
        }
    }
    // The email's allOf held nothing but patterns; an empty branch only adds noise.
    let empty = Value::Object(serde_json::Map::new());
    if let Some(Value::Array(all)) = map.get_mut("allOf") {
        all.retain(|s| *s != empty && *s != Value::Bool(true));
        if all.is_empty() {
            map.remove("allOf");
        }
    }
}

/// Joins the lines of descriptions taken from doc comments, which are wrapped for the
/// source and not for an editor's tooltip; blank lines still part paragraphs.
fn unwrap_doc_lines(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    Value::String(text) if key == "description" => {
                        *text = text
                            .split("\n\n")
                            .map(|paragraph| paragraph.replace('\n', " "))
                            .collect::<Vec<_>>()
                            .join("\n\n");
                    }
                    _ => unwrap_doc_lines(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(unwrap_doc_lines),
        _ => {}
    }
}

/// A string schema for the newtypes below.
fn string_rule(description: &str, pattern: String) -> Schema {
    json_schema!({
        "type": "string",
        "description": description,
        "pattern": pattern,
    })
}

impl JsonSchema for Email {
    fn schema_name() -> Cow<'static, str> {
        "Email".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let atext = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]";
        let label = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
        let shape = format!(r"{atext}+(?:\.{atext}+)*@{label}(?:\.{label})+");
        // One pattern cannot count the parts of an address and check their shape at
        // once without look-ahead, which not every validator has; hence the allOf.
        json_schema!({
            "type": "string",
            "description": "local@domain, ASCII only: the local part 1 to 64 characters of \
                letters, digits, !#$%&'*+/=?^_`{|}~- and single inner dots; the domain at \
                least two dot-separated labels of letters, digits and inner hyphens, 1 to \
                63 characters each, the last not all digits; at most 254 characters in \
                all. Trimmed and lower-cased by the daemon.",
            "pattern": trimmed(&shape, false),
            "allOf": [
                {"pattern": format!("^{WS}*[^@]{{1,64}}@")},
                {"pattern": format!("^{WS}*{NOT_WS}{{1,254}}{WS}*$")},
                {"not": {"pattern": format!(r"\.[0-9]+{WS}*$")}},
            ],
        })
    }
}

impl JsonSchema for Phone {
    fn schema_name() -> Cow<'static, str> {
        "Phone".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        string_rule(
            "With the country code: + then 7 to 15 digits; spaces, dashes, dots and \
             parentheses may separate them and are removed when stored.",
            trimmed(r"\+[ .()-]*(?:[0-9][ .()-]*){7,15}", true),
        )
    }
}

impl JsonSchema for Currency {
    fn schema_name() -> Cow<'static, str> {
        "Currency".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        string_rule(
            "B2B: the balance's currency, three ASCII letters (ISO 4217 style), stored \
             upper-cased.",
            trimmed("[A-Za-z]{3}", true),
        )
    }
}

impl JsonSchema for SiteLink {
    fn schema_name() -> Cow<'static, str> {
        "SiteLink".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // The daemon parses the link as browsers do (WHATWG), which takes forms such as
        // `http:example.com`; a stricter pattern here would refuse links it accepts.
        string_rule(
            "B2B: the company's site, an absolute http or https URL with a host. Only \
             the scheme is checked here; the daemon parses the whole URL.",
            trimmed(r"[Hh][Tt][Tt][Pp][Ss]?:[\s\S]*[^\t-\r /\\][\s\S]*", true),
        )
    }
}

impl JsonSchema for Number {
    // A plain number: inlined so that a field's range sits beside its type.
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Number".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "number",
        })
    }
}

impl JsonSchema for CardStatus {
    fn schema_name() -> Cow<'static, str> {
        "CardStatus".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "integer",
            "enum": [1, 2, 3],
            "description": "The card's status: 1 confirmed, 2 pending confirmation, 3 rejected.",
        })
    }
}

/// `discount_card.date_limit`, whose Rust type (chrono's) has no schema of its own.
pub struct CalendarDate;

impl JsonSchema for CalendarDate {
    fn schema_name() -> Cow<'static, str> {
        "CalendarDate".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // Not `"format": "date"`: formats are only annotations in 2020-12 unless a
        // validator is told otherwise, and it would refuse the surrounding whitespace
        // the daemon trims.
        string_rule(
            "YYYY-MM-DD, a day that exists (leap years included).",
            date_pattern(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_length_limit_is_published() {
        let schema = request_schema(Level::Strict, Types::Strict);
        for (field, max) in FIELDS_MAX {
            let pointer = format!("/$defs/UserData/properties/{field}/pattern");
            let pattern = schema.pointer(&pointer).and_then(Value::as_str);
            let expected = text_pattern(max, field == "title");
            assert_eq!(pattern, Some(expected.as_str()), "{field}");
        }
    }

    #[test]
    fn title_and_email_are_required_and_unknown_keys_refused() {
        let schema = request_schema(Level::Strict, Types::Strict);
        let user = schema.pointer("/$defs/UserData");
        let required = user.and_then(|u| u.get("required"));
        assert_eq!(required, Some(&serde_json::json!(["title", "email"])));
        let extra = user.and_then(|u| u.get("additionalProperties"));
        assert_eq!(extra, Some(&Value::Bool(false)));
    }

    /// Every key anywhere in `value` whose name is in `names`, as a JSON pointer.
    fn keys_named(value: &Value, names: &[&str], at: &str, found: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, sub) in map {
                    let here = format!("{at}/{key}");
                    if names.contains(&key.as_str()) {
                        found.push(here.clone());
                    }
                    keys_named(sub, names, &here, found);
                }
            }
            Value::Array(items) => {
                for (i, sub) in items.iter().enumerate() {
                    keys_named(sub, names, &format!("{at}/{i}"), found);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn the_format_has_no_value_rule_and_keeps_the_keys_and_types() {
        for types in [Types::Strict, Types::Lenient] {
            format_of(types);
        }
    }

    fn format_of(types: Types) {
        let format = request_schema(Level::Format, types);
        let strict = request_schema(Level::Strict, types);
        let rules = [
            "required",
            "pattern",
            "minimum",
            "maximum",
            "minLength",
            "maxLength",
            "enum",
            "const",
            "not",
            "format",
            "allOf",
        ];
        let mut found = Vec::new();
        keys_named(&format, &rules, "", &mut found);
        assert_eq!(found, ["/required"], "{format:#}");
        assert_eq!(format["required"], serde_json::json!(["users"]));
        // The strict schema has them, or this test would prove nothing.
        let mut in_strict = Vec::new();
        keys_named(&strict, &rules, "", &mut in_strict);
        assert!(in_strict.len() > 20, "{types:?} {in_strict:?}");
        for def in ["UserData", "DiscountCard"] {
            let pointer = format!("/$defs/{def}/additionalProperties");
            assert_eq!(format.pointer(&pointer), Some(&Value::Bool(false)), "{def}");
            let keys = |s: &Value| {
                let properties = s.pointer(&format!("/$defs/{def}/properties"));
                properties
                    .and_then(Value::as_object)
                    .map(|p| p.keys().cloned().collect::<Vec<_>>())
            };
            assert_eq!(keys(&format), keys(&strict), "{def}");
        }
        // Every schema's type is the strict one's, all the way down.
        let mut types = (Vec::new(), Vec::new());
        keys_named(&format, &["type", "$ref"], "", &mut types.0);
        keys_named(&strict, &["type", "$ref"], "", &mut types.1);
        assert_eq!(types.0, types.1);
        for pointer in &types.0 {
            assert_eq!(
                format.pointer(pointer),
                strict.pointer(pointer),
                "{pointer}"
            );
        }
    }

    #[test]
    fn lenient_widens_only_the_fields_of_the_table() {
        let strict = request_schema(Level::Strict, Types::Strict);
        let lenient = request_schema(Level::Strict, Types::Lenient);
        let user = |s: &Value, field: &str| {
            s.pointer(&format!("/$defs/UserData/properties/{field}"))
                .cloned()
        };
        let widened = [
            "customer_group_id",
            "manager_id",
            "balance",
            "newsletter_subscription",
            "discount_card",
        ];
        for (field, _) in
            FIELDS_MAX
                .iter()
                .chain(&[("email", 0), ("balance_currency", 0), ("site_link", 0)])
        {
            assert_eq!(user(&strict, field), user(&lenient, field), "{field}");
        }
        for field in widened {
            assert_ne!(user(&strict, field), user(&lenient, field), "{field}");
            let branches = user(&lenient, field).and_then(|f| f.get("anyOf").cloned());
            assert!(
                branches.is_some_and(|b| b.as_array().is_some_and(|b| b.len() >= 2)),
                "{field}"
            );
        }
        for def in ["Phone", "CalendarDate", "CardStatus"] {
            let pointer = format!("/$defs/{def}");
            assert_ne!(strict.pointer(&pointer), lenient.pointer(&pointer), "{def}");
        }
        // The strict schema is unchanged by the lenient one's existence.
        let text = strict.to_string();
        assert!(
            !text.contains("Lenient") && !text.contains("DD.MM.YYYY"),
            "{text}"
        );
    }
}
