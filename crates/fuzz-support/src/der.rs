//! Structure-aware inputs for DER parsers: a valid message read as a tree of TLVs (descending
//! into constructed elements and into OCTET/BIT STRINGs that hold DER), one to three elements
//! changed — content replaced or bit-flipped, tag changed, element deleted, duplicated or nested,
//! length encoded as a lie (too short, too long, non-minimal, indefinite, 4 GiB) — and the tree
//! encoded again with every other length right; also truncations, trailing and oversized data, and
//! random bytes.
//!
//! The lengths are written here rather than with the `der` crate because most of the point is to
//! write the ones `der` refuses to (non-minimal, indefinite, lying).

use proptest::collection::vec;
use proptest::prelude::*;

/// One element of the tree.
#[derive(Debug, Clone)]
struct Tlv {
    /// The identifier octets (one, or more for high tag numbers).
    tag: Vec<u8>,
    content: Content,
    /// When set, the length is written wrong in this way.
    lie: Option<Lie>,
}

#[derive(Debug, Clone)]
enum Content {
    Primitive(Vec<u8>),
    Constructed(Vec<Tlv>),
    /// An OCTET STRING (empty prefix) or BIT STRING (prefix: the unused-bits octet) holding DER.
    Encapsulated(Vec<u8>, Vec<Tlv>),
}

/// A wrong length for one element.
#[derive(Debug, Clone, Copy)]
pub enum Lie {
    /// The right length plus this many (reads past the element).
    Longer(u8),
    /// The right length minus this many (cuts the element).
    Shorter(u8),
    /// Long form with leading zero octets (`0x84 00 00 00 n`): not DER.
    NonMinimal,
    /// The indefinite form (`0x80`, end-of-contents `00 00`): BER, not DER.
    Indefinite,
    /// `0x84 ff ff ff ff`: 4 GiB that are not there.
    Huge,
    /// `0x89` and nine octets: more than a `usize`.
    Overflow,
}

/// One change to the tree (or to the whole encoding).
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Replace the content of a primitive element.
    Content(usize, Vec<u8>),
    /// Flip one bit of a primitive element's content.
    FlipBit(usize, usize, u8),
    /// Change the tag of an element (its content is kept).
    Tag(usize, u8),
    /// Remove an element.
    Delete(usize),
    /// Repeat an element.
    Duplicate(usize),
    /// Wrap an element in one more SEQUENCE.
    Nest(usize),
    /// Write an element's length wrong.
    Length(usize, Lie),
    /// Make a primitive element's content large (this many bytes of its first byte or zero).
    Grow(usize, u32),
}

fn parse_len(input: &[u8]) -> Option<(usize, usize)> {
    let first = *input.first()?;
    if first < 0x80 {
        return Some((usize::from(first), 1));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 || n > 4 || input.len() < 1 + n {
        return None;
    }
    let len = input[1..=n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
    Some((len, 1 + n))
}

/// Reads `input` as a sequence of definite-length TLVs; `None` unless all of it is.
fn parse(input: &[u8], depth: u32) -> Option<Vec<Tlv>> {
    if depth > 40 {
        return None;
    }
    let mut out = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let mut tag_len = 1;
        if rest[0] & 0x1f == 0x1f {
            while *rest.get(tag_len)? & 0x80 != 0 {
                tag_len += 1;
            }
            tag_len += 1;
        }
        let tag = rest.get(..tag_len)?.to_vec();
        let (len, len_len) = parse_len(rest.get(tag_len..)?)?;
        let start = tag_len + len_len;
        let body = rest.get(start..start.checked_add(len)?)?;
        let content = if tag[0] & 0x20 != 0 {
            Content::Constructed(parse(body, depth + 1)?)
        } else if tag == [0x04] && !body.is_empty() {
            match parse(body, depth + 1) {
                Some(inner) => Content::Encapsulated(Vec::new(), inner),
                None => Content::Primitive(body.to_vec()),
            }
        } else if tag == [0x03] && body.len() > 1 && body[0] == 0 {
            match parse(&body[1..], depth + 1) {
                Some(inner) => Content::Encapsulated(vec![0], inner),
                None => Content::Primitive(body.to_vec()),
            }
        } else {
            Content::Primitive(body.to_vec())
        };
        out.push(Tlv { tag, content, lie: None });
        rest = &rest[start + len..];
    }
    Some(out)
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

fn encode(nodes: &[Tlv], out: &mut Vec<u8>) {
    for n in nodes {
        let mut body = Vec::new();
        match &n.content {
            Content::Primitive(b) => body.extend_from_slice(b),
            Content::Constructed(kids) => encode(kids, &mut body),
            Content::Encapsulated(prefix, kids) => {
                body.extend_from_slice(prefix);
                encode(kids, &mut body);
            }
        }
        out.extend_from_slice(&n.tag);
        match n.lie {
            None => push_len(out, body.len()),
            Some(Lie::Longer(k)) => push_len(out, body.len() + usize::from(k) + 1),
            Some(Lie::Shorter(k)) => push_len(out, body.len().saturating_sub(usize::from(k) + 1)),
            Some(Lie::NonMinimal) => {
                out.push(0x84);
                out.extend_from_slice(&(body.len() as u32).to_be_bytes());
            }
            Some(Lie::Indefinite) => out.push(0x80),
            Some(Lie::Huge) => out.extend_from_slice(&[0x84, 0xff, 0xff, 0xff, 0xff]),
            Some(Lie::Overflow) => {
                out.push(0x89);
                out.extend_from_slice(&[0xff; 9]);
            }
        }
        out.extend_from_slice(&body);
        if matches!(n.lie, Some(Lie::Indefinite)) {
            out.extend_from_slice(&[0, 0]);
        }
    }
}

fn count(nodes: &[Tlv]) -> usize {
    nodes
        .iter()
        .map(|n| {
            1 + match &n.content {
                Content::Primitive(_) => 0,
                Content::Constructed(k) | Content::Encapsulated(_, k) => count(k),
            }
        })
        .sum()
}

/// Applies `f` to the list holding the `i`-th element (pre-order) and its position in that list.
fn with_slot(nodes: &mut Vec<Tlv>, i: &mut usize, f: &mut dyn FnMut(&mut Vec<Tlv>, usize)) -> bool {
    for pos in 0..nodes.len() {
        if *i == 0 {
            f(nodes, pos);
            return true;
        }
        *i -= 1;
        if let Content::Constructed(k) | Content::Encapsulated(_, k) = &mut nodes[pos].content {
            if with_slot(k, i, f) {
                return true;
            }
        }
    }
    false
}

fn apply(nodes: &mut Vec<Tlv>, m: &Mutation) {
    let total = count(nodes);
    if total == 0 {
        return;
    }
    let target = match m {
        Mutation::Content(i, _)
        | Mutation::FlipBit(i, _, _)
        | Mutation::Tag(i, _)
        | Mutation::Delete(i)
        | Mutation::Duplicate(i)
        | Mutation::Nest(i)
        | Mutation::Length(i, _)
        | Mutation::Grow(i, _) => i % total,
    };
    let mut i = target;
    with_slot(nodes, &mut i, &mut |list, pos| match m {
        Mutation::Content(_, bytes) => list[pos].content = Content::Primitive(bytes.clone()),
        Mutation::FlipBit(_, at, bit) => {
            if let Content::Primitive(b) = &mut list[pos].content {
                if !b.is_empty() {
                    let at = at % b.len();
                    b[at] ^= 1 << (bit % 8);
                }
            } else {
                list[pos].tag[0] ^= 1 << (bit % 8);
            }
        }
        // A high tag number (low five bits set) with no octet after it: a truncated identifier.
        Mutation::Tag(_, tag) => list[pos].tag = vec![*tag],
        Mutation::Delete(_) => {
            list.remove(pos);
        }
        Mutation::Duplicate(_) => {
            let copy = list[pos].clone();
            list.insert(pos, copy);
        }
        Mutation::Nest(_) => {
            let inner = list[pos].clone();
            list[pos] = Tlv { tag: vec![0x30], content: Content::Constructed(vec![inner]), lie: None };
        }
        Mutation::Length(_, lie) => list[pos].lie = Some(*lie),
        Mutation::Grow(_, n) => {
            let fill = match &list[pos].content {
                Content::Primitive(b) => b.first().copied().unwrap_or(0),
                _ => 0,
            };
            list[pos].content = Content::Primitive(vec![fill; *n as usize]);
        }
    });
}

fn lie() -> impl Strategy<Value = Lie> {
    prop_oneof![
        any::<u8>().prop_map(Lie::Longer),
        any::<u8>().prop_map(Lie::Shorter),
        Just(Lie::NonMinimal),
        Just(Lie::Indefinite),
        Just(Lie::Huge),
        Just(Lie::Overflow),
    ]
}

/// Interesting contents: random, empty, INTEGER edge values, a bad OID, long runs.
fn content() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => vec(any::<u8>(), 0..48),
        1 => Just(Vec::new()),
        1 => Just(vec![0x00]),
        1 => Just(vec![0x80]),
        1 => Just(vec![0xff; 9]),
        1 => Just(vec![0x00, 0x00, 0x01]),
        1 => Just(vec![0x7f; 33]),
        1 => Just(vec![0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]),
    ]
}

/// One mutation.
pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), content()).prop_map(|(i, c)| Mutation::Content(i, c)),
        4 => (any::<usize>(), any::<usize>(), any::<u8>()).prop_map(|(i, j, b)| Mutation::FlipBit(i, j, b)),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(i, t)| Mutation::Tag(i, t)),
        2 => any::<usize>().prop_map(Mutation::Delete),
        1 => any::<usize>().prop_map(Mutation::Duplicate),
        1 => any::<usize>().prop_map(Mutation::Nest),
        3 => (any::<usize>(), lie()).prop_map(|(i, l)| Mutation::Length(i, l)),
        1 => (any::<usize>(), prop_oneof![0u32..300, 60_000u32..70_000]).prop_map(|(i, n)| Mutation::Grow(i, n)),
    ]
}

/// `valid` with `mutations` applied, re-encoded (a message that is not DER is only truncated).
pub fn mutate(valid: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    match parse(valid, 0) {
        Some(mut tree) => {
            for m in mutations {
                apply(&mut tree, m);
            }
            let mut out = Vec::with_capacity(valid.len() + 16);
            encode(&tree, &mut out);
            out
        }
        None => valid.to_vec(),
    }
}

/// The valid messages with one to three elements changed.
pub fn mutated(valid: Vec<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    (proptest::sample::select(valid), vec(mutation(), 1..=3)).prop_map(|(v, ms)| mutate(&v, &ms)).boxed()
}

/// What a DER parser should get: mostly structure-aware mutations of `valid`, also truncations,
/// trailing data, the valid messages themselves, and random bytes (bare or behind a SEQUENCE
/// header).
pub fn inputs(valid: Vec<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    assert!(!valid.is_empty(), "no valid message to mutate");
    let pick = proptest::sample::select(valid.clone());
    prop_oneof![
        12 => mutated(valid),
        3 => (pick.clone(), any::<usize>()).prop_map(|(v, i)| v[..i % (v.len() + 1)].to_vec()),
        1 => (pick.clone(), vec(any::<u8>(), 1..64)).prop_map(|(mut v, tail)| { v.extend(tail); v }),
        1 => pick,
        3 => vec(any::<u8>(), 0..400),
        1 => vec(any::<u8>(), 0..400).prop_map(|mut v| { v.insert(0, 0x30); v }),
        1 => (1usize..3000).prop_map(|n| [0x30u8, 0x80].repeat(n)),
    ]
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = &[0x30, 0x0b, 0x02, 0x01, 0x05, 0x04, 0x06, 0x30, 0x04, 0x02, 0x02, 0x01, 0x00];

    #[test]
    fn a_valid_message_encodes_back_byte_for_byte() {
        assert_eq!(mutate(SAMPLE, &[]), SAMPLE);
        let tree = parse(SAMPLE, 0).expect("parses");
        assert_eq!(count(&tree), 5, "SEQUENCE, INTEGER, OCTET STRING holding SEQUENCE holding INTEGER");
    }

    #[test]
    fn one_element_changed_and_lengths_fixed_around_it() {
        // The innermost INTEGER (element 4) gets three bytes: every enclosing length grows by one.
        let out = mutate(SAMPLE, &[Mutation::Content(4, vec![1, 2, 3])]);
        assert_eq!(out, [0x30, 0x0c, 0x02, 0x01, 0x05, 0x04, 0x07, 0x30, 0x05, 0x02, 0x03, 1, 2, 3]);
        let lied = mutate(SAMPLE, &[Mutation::Length(0, Lie::Indefinite)]);
        assert_eq!(&lied[..2], &[0x30, 0x80]);
        assert_eq!(&lied[lied.len() - 2..], &[0, 0]);
    }
}
