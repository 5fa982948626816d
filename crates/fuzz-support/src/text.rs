//! Structure-aware inputs for text parsers: JSON bodies mutated one value at a time, form and query
//! strings one pair at a time, TOML files one line at a time; and for all of them character-level
//! damage (cuts, insertions of hostile tokens, truncation, invalid UTF-8) and random text.

use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::Value;

/// Tokens that break naive parsers: quoting, escapes, separators, numbers at the edges, control
/// and direction characters, nesting.
const HOSTILE: &[&str] = &[
    "\"",
    "'",
    "\\",
    "\\u",
    "\\ud800",
    "%",
    "%zz",
    "%00",
    "%ff",
    "%c3%28",
    "&",
    "=",
    "==",
    "&&",
    "+",
    ";",
    "\0",
    "\r\n",
    "\n",
    "\u{202e}",
    "\u{feff}",
    "\u{ffff}",
    "𝄞",
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    "{{",
    "#",
    "'''",
    "\"\"\"",
    ",",
    ":",
    "-1",
    "0",
    "-0",
    "1e999",
    "-1e999",
    "NaN",
    "inf",
    "18446744073709551616",
    "-9223372036854775809",
    "99999999999999999999999999",
    "0x",
    "1_000",
    "true",
    "null",
    "@",
    "@@",
    "a@b",
    ".",
    "..",
    "../",
    "/",
    "*",
    "(",
    ")",
    " ",
    "\t",
];

/// A short random string: hostile tokens, arbitrary characters, ASCII.
pub fn garbage() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => proptest::sample::select(HOSTILE).prop_map(str::to_string),
        2 => vec(any::<char>(), 0..24).prop_map(String::from_iter),
        2 => vec(0x20u8..0x7f, 0..24).prop_map(|b| b.into_iter().map(char::from).collect()),
        1 => (1usize..5000).prop_map(|n| "A".repeat(n)),
    ]
}

/// Character-level damage to a text.
#[derive(Debug, Clone)]
pub enum Damage {
    /// Insert at a position (taken modulo the length, moved to a character boundary).
    Insert(usize, String),
    /// Remove a range.
    Cut(usize, usize),
    /// Keep only the start.
    Truncate(usize),
    /// Repeat a range.
    Repeat(usize, usize, u8),
}

fn boundary(s: &str, i: usize) -> usize {
    let mut i = i % (s.len() + 1);
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Applies `d` to `s`.
pub fn damage(s: &str, d: &Damage) -> String {
    match d {
        Damage::Insert(at, t) => {
            let at = boundary(s, *at);
            format!("{}{t}{}", &s[..at], &s[at..])
        }
        Damage::Cut(a, len) => {
            let a = boundary(s, *a);
            let b = boundary(s, a + len % 64);
            let b = b.max(a);
            format!("{}{}", &s[..a], &s[b..])
        }
        Damage::Truncate(at) => s[..boundary(s, *at)].to_string(),
        Damage::Repeat(a, len, times) => {
            let a = boundary(s, *a);
            let b = boundary(s, a + len % 64).max(a);
            format!("{}{}{}", &s[..b], s[a..b].repeat(usize::from(*times % 16)), &s[b..])
        }
    }
}

fn damage_strategy() -> impl Strategy<Value = Damage> {
    prop_oneof![
        3 => (any::<usize>(), garbage()).prop_map(|(a, t)| Damage::Insert(a, t)),
        2 => (any::<usize>(), any::<usize>()).prop_map(|(a, l)| Damage::Cut(a, l)),
        2 => any::<usize>().prop_map(Damage::Truncate),
        1 => (any::<usize>(), any::<usize>(), any::<u8>()).prop_map(|(a, l, t)| Damage::Repeat(a, l, t)),
    ]
}

/// `valid` texts with one to three character-level damages.
pub fn damaged(valid: Vec<String>) -> BoxedStrategy<String> {
    (proptest::sample::select(valid), vec(damage_strategy(), 1..=3))
        .prop_map(|(v, ds)| ds.iter().fold(v, |s, d| damage(&s, d)))
        .boxed()
}

/// Random bytes, mostly not UTF-8.
pub fn random_bytes() -> impl Strategy<Value = Vec<u8>> + Clone {
    vec(any::<u8>(), 0..300)
}

/// A JSON value of any type, including edges (large numbers, deep nesting, long strings).
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)),
        garbage().prop_map(Value::String),
        (0usize..200).prop_map(|n| (0..n).fold(Value::Null, |v, _| Value::Array(vec![v]))),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec((garbage(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A change to one value of a JSON document.
#[derive(Debug, Clone)]
pub enum JsonEdit {
    /// Replace the n-th value (pre-order) by another.
    Replace(usize, Value),
    /// Remove the n-th value from its object or array.
    Remove(usize),
    /// Add a member (to the n-th value, if an object).
    Add(usize, String, Value),
}

/// JSON pointers of every value of `v`, in pre-order.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                pointers(item, format!("{at}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                pointers(item, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out);
            }
        }
        _ => {}
    }
}

/// Applies `e` to `doc`.
pub fn edit_json(doc: &mut Value, e: &JsonEdit) {
    let mut all = Vec::new();
    pointers(doc, String::new(), &mut all);
    let (JsonEdit::Replace(i, _) | JsonEdit::Remove(i) | JsonEdit::Add(i, _, _)) = e;
    let at = &all[i % all.len()];
    match e {
        JsonEdit::Replace(_, new) => {
            if let Some(v) = doc.pointer_mut(at) {
                *v = new.clone();
            }
        }
        JsonEdit::Remove(_) => {
            let Some((parent, last)) = at.rsplit_once('/') else {
                *doc = Value::Null;
                return;
            };
            let key = last.replace("~1", "/").replace("~0", "~");
            match doc.pointer_mut(parent) {
                Some(Value::Object(m)) => {
                    m.remove(&key);
                }
                Some(Value::Array(a)) => {
                    if let Ok(i) = key.parse::<usize>() {
                        if i < a.len() {
                            a.remove(i);
                        }
                    }
                }
                _ => {}
            }
        }
        JsonEdit::Add(_, k, new) => {
            if let Some(Value::Object(m)) = doc.pointer_mut(at) {
                m.insert(k.clone(), new.clone());
            }
        }
    }
}

fn json_edit() -> impl Strategy<Value = JsonEdit> {
    prop_oneof![
        4 => (any::<usize>(), json_value()).prop_map(|(i, v)| JsonEdit::Replace(i, v)),
        2 => any::<usize>().prop_map(JsonEdit::Remove),
        1 => (any::<usize>(), garbage(), json_value()).prop_map(|(i, k, v)| JsonEdit::Add(i, k, v)),
    ]
}

/// What a JSON body parser should get: the valid documents with one to three values replaced,
/// removed or added, then (sometimes) damaged as text; random JSON; random bytes.
pub fn json_inputs(valid: Vec<Value>) -> BoxedStrategy<Vec<u8>> {
    let texts: Vec<String> = valid.iter().map(Value::to_string).collect();
    prop_oneof![
        6 => (proptest::sample::select(valid), vec(json_edit(), 1..=3)).prop_map(|(mut doc, es)| {
            for e in &es {
                edit_json(&mut doc, e);
            }
            doc.to_string().into_bytes()
        }),
        3 => damaged(texts).prop_map(String::into_bytes),
        1 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => random_bytes(),
        1 => (1usize..20_000).prop_map(|n| "[".repeat(n).into_bytes()),
    ]
    .boxed()
}

/// A change to one `key=value` pair of a form or query string.
#[derive(Debug, Clone)]
pub enum PairEdit {
    /// Replace the value of the n-th pair (raw text: may hold `&`, `=`, bad `%` escapes).
    Value(usize, String),
    /// Replace the key of the n-th pair.
    Key(usize, String),
    /// Remove the n-th pair.
    Remove(usize),
    /// Repeat the n-th pair.
    Repeat(usize),
    /// Add a pair.
    Add(String, String),
}

fn percent_encoded(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() { char::from(b).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// Applies `edits` to the form `valid` (`k=v&k=v`).
pub fn edit_pairs(valid: &str, edits: &[PairEdit]) -> String {
    let mut pairs: Vec<(String, String)> = valid
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect();
    for e in edits {
        let n = pairs.len().max(1);
        match e {
            PairEdit::Value(i, v) if !pairs.is_empty() => pairs[i % n].1 = v.clone(),
            PairEdit::Key(i, k) if !pairs.is_empty() => pairs[i % n].0 = k.clone(),
            PairEdit::Remove(i) if !pairs.is_empty() => {
                pairs.remove(i % n);
            }
            PairEdit::Repeat(i) if !pairs.is_empty() => {
                let p = pairs[i % n].clone();
                pairs.push(p);
            }
            PairEdit::Add(k, v) => pairs.push((k.clone(), v.clone())),
            _ => {}
        }
    }
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

fn pair_value() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => garbage(),
        2 => garbage().prop_map(|g| percent_encoded(&g)),
    ]
}

fn pair_edit() -> impl Strategy<Value = PairEdit> {
    prop_oneof![
        4 => (any::<usize>(), pair_value()).prop_map(|(i, v)| PairEdit::Value(i, v)),
        1 => (any::<usize>(), pair_value()).prop_map(|(i, k)| PairEdit::Key(i, k)),
        2 => any::<usize>().prop_map(PairEdit::Remove),
        1 => any::<usize>().prop_map(PairEdit::Repeat),
        1 => (pair_value(), pair_value()).prop_map(|(k, v)| PairEdit::Add(k, v)),
    ]
}

/// What a form or query-string parser should get: valid forms with one to three pairs changed,
/// damaged forms, random text and bytes.
pub fn form_inputs(valid: Vec<String>) -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        6 => (proptest::sample::select(valid.clone()), vec(pair_edit(), 1..=3))
            .prop_map(|(v, es)| edit_pairs(&v, &es).into_bytes()),
        2 => damaged(valid).prop_map(String::into_bytes),
        1 => garbage().prop_map(String::into_bytes),
        1 => random_bytes(),
    ]
    .boxed()
}

/// A change to one line of a TOML file.
#[derive(Debug, Clone)]
pub enum LineEdit {
    /// Give the n-th `key = value` line another value (raw TOML text, any type or broken).
    Value(usize, String),
    /// Remove the n-th line.
    Remove(usize),
    /// Repeat the n-th line (a duplicate key or table).
    Repeat(usize),
    /// Insert a line before the n-th.
    Insert(usize, String),
}

/// Applies `edits` to the TOML text `valid`.
pub fn edit_lines(valid: &str, edits: &[LineEdit]) -> String {
    let mut lines: Vec<String> = valid.lines().map(str::to_string).collect();
    for e in edits {
        let n = lines.len().max(1);
        match e {
            LineEdit::Value(i, v) if !lines.is_empty() => {
                let i = i % n;
                if let Some((k, _)) = lines[i].split_once('=') {
                    lines[i] = format!("{k}= {v}");
                } else {
                    lines[i] = v.clone();
                }
            }
            LineEdit::Remove(i) if !lines.is_empty() => {
                lines.remove(i % n);
            }
            LineEdit::Repeat(i) if !lines.is_empty() => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            LineEdit::Insert(i, l) => lines.insert(i % (lines.len() + 1), l.clone()),
            _ => {}
        }
    }
    lines.join("\n")
}

/// A TOML value of any type, or broken TOML.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        Just("18446744073709551616".to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        any::<bool>().prop_map(|b| b.to_string()),
        garbage().prop_map(|g| format!("{g:?}")),
        garbage(),
        vec(any::<u16>(), 0..4).prop_map(|v| format!("{v:?}")),
        Just("{ a = 1 }".to_string()),
        Just("1979-05-27T07:32:00Z".to_string()),
        Just("\"\"\"".to_string()),
    ]
}

fn line_edit() -> impl Strategy<Value = LineEdit> {
    prop_oneof![
        5 => (any::<usize>(), toml_value()).prop_map(|(i, v)| LineEdit::Value(i, v)),
        2 => any::<usize>().prop_map(LineEdit::Remove),
        1 => any::<usize>().prop_map(LineEdit::Repeat),
        2 => (any::<usize>(), prop_oneof![
            (garbage(), toml_value()).prop_map(|(k, v)| format!("{k} = {v}")),
            garbage().prop_map(|t| format!("[{t}]")),
            garbage(),
        ])
            .prop_map(|(i, l)| LineEdit::Insert(i, l)),
    ]
}

/// What a TOML configuration parser should get: valid files with one to three lines changed
/// (values of other types, removed, duplicated, unknown keys and tables), damaged text, random
/// bytes.
pub fn toml_inputs(valid: Vec<String>) -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        6 => (proptest::sample::select(valid.clone()), vec(line_edit(), 1..=3))
            .prop_map(|(v, es)| edit_lines(&v, &es).into_bytes()),
        2 => damaged(valid).prop_map(String::into_bytes),
        1 => random_bytes(),
    ]
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pair_changed_the_others_kept() {
        let out = edit_pairs("a=1&b=2&c=3", &[PairEdit::Value(1, "%zz".into())]);
        assert_eq!(out, "a=1&b=%zz&c=3");
    }

    #[test]
    fn one_json_value_replaced_or_removed() {
        let mut doc = serde_json::json!({"emails": ["a@x", "b@x"], "usage": "encryption"});
        edit_json(&mut doc, &JsonEdit::Replace(2, Value::from(7)));
        assert_eq!(doc, serde_json::json!({"emails": [7, "b@x"], "usage": "encryption"}));
        edit_json(&mut doc, &JsonEdit::Remove(4));
        assert_eq!(doc, serde_json::json!({"emails": [7, "b@x"]}));
    }

    #[test]
    fn one_toml_line_given_another_value() {
        assert_eq!(
            edit_lines("[a]\nx = 1\ny = 2", &[LineEdit::Value(1, "true".into())]),
            "[a]\nx = true\ny = 2"
        );
    }
}
