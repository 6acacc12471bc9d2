//! Payload filters in the MongoDB style: parsed once into a validated tree ([`Filter`]),
//! then evaluated against each candidate's payload (a `serde_json::Value`).
//!
//! Language:
//! - a filter is an object; its keys are ANDed. A key is a field path (`"price"`,
//!   `"author.name"`: dots step into nested objects) or one of `$and`, `$or` (a non-empty
//!   array of filters) and `$not` (one filter);
//! - a field's condition is either a bare value, meaning `$eq`, or an object of operators,
//!   ANDed: `$eq $ne $gt $gte $lt $lte $in $nin $exists $not`;
//! - `$gt $gte $lt $lte` take a number or a string; `$in $nin` an array; `$exists` a boolean;
//!   a field's `$not` an object of operators (`{ price: { $not: { $gt: 5 } } }`).
//!
//! Semantics, following MongoDB's:
//! - a record without a payload is an empty object;
//! - a path that meets an array steps into each element that is an object (`"tags.name"`
//!   over `tags: [{ name }, ...]`), or, for a numeric step, the element at that index;
//! - a condition on a field holding an array holds if it holds for the array itself or for
//!   any element (`{ tags: 'red' }` matches `tags: ['red', 'blue']`);
//! - `$eq`/`$in` compare by value: numbers by numeric value (1 equals 1.0), objects whatever
//!   the order of their keys; `{ f: null }` matches a missing `f` as well as `f: null`,
//!   and (MongoDB 9.0) any branch of a dotted path that ends without a value
//!   (`{ "a.b": null }` matches `a: [{ b: 1 }, {}]`, `a: []`, `a: [1]`);
//! - `$gt` and friends compare numbers with numbers and strings with strings (by UTF-8
//!   bytes); any other pairing, or a missing field, does not match;
//! - `$ne`, `$nin` and `$not` are the exact negations of `$eq`, `$in` and their operand, so
//!   they match a missing field (`{ f: { $ne: 1 } }` matches a record without `f`);
//! - `$exists: true` matches a present field, even one holding null.
//!
//! Invariant: parsing refuses everything it does not understand, with an error naming where
//! (`at 'price.$gt'`) and what; evaluation never fails and never allocates per record.

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Deepest nesting of filters and conditions.
pub const FILTER_DEPTH_MAX: usize = 32;
/// Most nodes (filters, conditions and `$in` values) in one filter.
pub const FILTER_NODES_MAX: usize = 10_000;
/// Longest field path, in bytes.
pub const FILTER_PATH_BYTES_MAX: usize = 1024;
/// Largest filter as JSON text, in bytes (checked by callers before parsing text).
pub const FILTER_JSON_BYTES_MAX: usize = 1 << 20;

/// A validated filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Every filter holds (the empty filter `{}` is `All([])`, which matches everything).
    All(Vec<Filter>),
    /// At least one filter holds.
    Any(Vec<Filter>),
    /// The filter does not hold.
    Not(Box<Filter>),
    /// A condition on the values a path reaches.
    Field {
        /// The path's steps (`"a.b"` is `["a", "b"]`).
        path: Vec<String>,
        /// What the values must satisfy.
        cond: Cond,
    },
}

/// A condition on a field.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// Equal to the value (or, for an array field, containing it).
    Eq(Value),
    /// Equal to one of the values.
    In(Choices),
    /// Ordered against a bound of the same type.
    Cmp(CmpOp, Bound),
    /// The path reaches a value (`true`) or does not (`false`).
    Exists(bool),
    /// The condition does not hold.
    Not(Box<Cond>),
    /// Every condition holds.
    All(Vec<Cond>),
}

/// The values of an `$in`, looked up by hash where JSON equality allows (strings, numbers by
/// value, booleans, null) and compared one by one otherwise (arrays, objects): a long `$in`
/// over a long array field costs one lookup per element, not one comparison per pair.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Choices {
    strings: HashSet<String, foldhash::fast::RandomState>,
    /// Bits of each number as f64 (`-0` as `0`), the value JSON equality compares.
    numbers: HashSet<u64, foldhash::fast::RandomState>,
    booleans: [bool; 2],
    null: bool,
    /// Arrays and objects, and numbers with no f64 value.
    others: Vec<Value>,
}

impl Choices {
    fn new(values: Vec<Value>) -> Choices {
        let mut choices = Choices::default();
        for value in values {
            match &value {
                Value::String(text) => {
                    choices.strings.insert(text.clone());
                }
                Value::Number(n) if n.as_f64().is_some() => {
                    choices.numbers.insert(number_key(n));
                }
                Value::Bool(b) => choices.booleans[usize::from(*b)] = true,
                Value::Null => choices.null = true,
                _ => choices.others.push(value),
            }
        }
        choices
    }

    /// Whether `value` is JSON-equal to one of the choices.
    fn contains(&self, value: &Value) -> bool {
        match value {
            Value::String(text) => self.strings.contains(text.as_str()),
            Value::Number(n) if n.as_f64().is_some() => self.numbers.contains(&number_key(n)),
            Value::Bool(b) => self.booleans[usize::from(*b)],
            Value::Null => self.null,
            _ => self.others.iter().any(|w| json_eq(value, w)),
        }
    }
}

/// The hash key of a number with an f64 value: its bits, `-0` folded into `0` (they are
/// equal as JSON numbers compare here).
fn number_key(n: &serde_json::Number) -> u64 {
    let x = n.as_f64().unwrap_or(f64::NAN);
    if x == 0.0 {
        0
    } else {
        x.to_bits()
    }
}

/// The ordering operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `$gt`
    Gt,
    /// `$gte`
    Gte,
    /// `$lt`
    Lt,
    /// `$lte`
    Lte,
}

/// The operand of an ordering operator.
#[derive(Debug, Clone, PartialEq)]
pub enum Bound {
    /// Compared with numbers.
    Number(f64),
    /// Compared with strings, by UTF-8 bytes.
    String(String),
}

impl Filter {
    /// Parses and validates a filter. Errors are `InvalidArgument` naming the bad part.
    ///
    /// ```
    /// use keeldb_core::search::filter::Filter;
    /// let filter = Filter::parse(&serde_json::json!({ "price": { "$lt": 10 }, "tags": "red" }))
    ///     .expect("a valid filter");
    /// assert!(filter.matches(Some(&serde_json::json!({ "price": 5, "tags": ["red", "blue"] }))));
    /// assert!(!filter.matches(None));
    /// ```
    pub fn parse(value: &Value) -> Result<Filter> {
        let mut parser = Parser { nodes: 0 };
        parser.filter(value, "", 0)
    }

    /// Parses a filter from JSON text of at most [`FILTER_JSON_BYTES_MAX`] bytes.
    pub fn parse_json(text: &str) -> Result<Filter> {
        if text.len() > FILTER_JSON_BYTES_MAX {
            return Err(Error::invalid(format!(
                "invalid filter: {} bytes of JSON, the limit is {FILTER_JSON_BYTES_MAX}",
                text.len()
            )));
        }
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::invalid(format!("invalid filter: not JSON: {e}")))?;
        Filter::parse(&value)
    }

    /// Whether a record whose payload is `payload` (`None`: it has none) matches.
    pub fn matches(&self, payload: Option<&Value>) -> bool {
        match self {
            Filter::All(filters) => filters.iter().all(|f| f.matches(payload)),
            Filter::Any(filters) => filters.iter().any(|f| f.matches(payload)),
            Filter::Not(filter) => !filter.matches(payload),
            Filter::Field { path, cond } => cond.holds(payload, path),
        }
    }
}

impl Cond {
    fn holds(&self, doc: Option<&Value>, path: &[String]) -> bool {
        match self {
            Cond::Not(cond) => !cond.holds(doc, path),
            Cond::All(conds) => conds.iter().all(|c| c.holds(doc, path)),
            Cond::Exists(wanted) => reaches(doc, path, &mut |_| true).reached == *wanted,
            Cond::Eq(wanted) => equals(doc, path, &mut |x| json_eq(x, wanted), wanted.is_null()),
            Cond::In(choices) => equals(doc, path, &mut |x| choices.contains(x), choices.null),
            Cond::Cmp(op, bound) => {
                reaches(doc, path, &mut |v| {
                    leaf_any(v, &mut |x| compare(*op, bound, x))
                })
                .matched
            }
        }
    }
}

/// Whether the path reaches a value `wanted` accepts, or (if `null_wanted`) a branch of it
/// ends without a value: MongoDB's rule since 9.0, "a dotted path that does not resolve to a
/// non-null value evaluates as null", so `{"a.b": null}` matches `{"a": [{"b": 1}, {}]}`.
fn equals(
    doc: Option<&Value>,
    path: &[String],
    wanted: &mut dyn FnMut(&Value) -> bool,
    null_wanted: bool,
) -> bool {
    let reach = reaches(doc, path, &mut |v| leaf_any(v, &mut *wanted));
    // Reaching nothing at all is a branch without a value too (an index past the end of an
    // array of scalars), as `$exists: false` says.
    reach.matched || ((reach.missing || !reach.reached) && null_wanted)
}

/// What a walk of a path found.
struct Reach {
    /// Some branch reached a value (`$exists`).
    reached: bool,
    /// The test held for a value reached (the walk stops at the first).
    matched: bool,
    /// Some branch ended without a value, as [`Walk::missing`] says; meaningful only when
    /// nothing matched.
    missing: bool,
}

/// Calls `test` on each value `path` reaches in `doc` until it returns true.
fn reaches<'v>(
    doc: Option<&'v Value>,
    path: &[String],
    test: &mut dyn FnMut(&'v Value) -> bool,
) -> Reach {
    let mut walk = Walk {
        test,
        reached: false,
        missing: false,
        seen: None,
    };
    let matched = doc.is_some_and(|d| walk.walk(d, path));
    Reach {
        reached: walk.reached,
        matched,
        missing: walk.missing,
    }
}

/// One evaluation of a path against a document.
struct Walk<'t, 'v> {
    test: &'t mut dyn FnMut(&'v Value) -> bool,
    reached: bool,
    /// Whether a branch of the path ended without a value (a walk that reaches nothing at
    /// all, a record without a payload included, counts as one too: see [`equals`]): an
    /// object without the step's key, a scalar with steps left, or, in an array met with
    /// a named step left, the array empty or an element that is not an object (MongoDB 9.0:
    /// an empty array, an array of scalars or one holding an array evaluates as null).
    /// Under a numeric step only an empty array counts: the other elements are not
    /// branches there (`{"a.0": null}` does not match `{"a": [5, 6]}`).
    missing: bool,
    /// The (value, steps left) pairs entered from an array where a numeric step takes both
    /// routes (see [`Walk::walk`]); made on the first such array. Without it, a path of
    /// numeric steps through nested arrays of objects (`{"0":[{"0":[...]}]}` and `0.0.0...`)
    /// revisits the same values by both routes at every level: exponential in the path's
    /// length, with the search's read lock held. With it each pair is walked once.
    seen: Option<HashSet<(*const Value, usize), foldhash::fast::RandomState>>,
}

impl<'v> Walk<'_, 'v> {
    fn walk(&mut self, value: &'v Value, path: &[String]) -> bool {
        #[cfg(test)]
        tests::WALKS.with(|n| n.set(n.get() + 1));
        let Some((step, rest)) = path.split_first() else {
            self.reached = true;
            return (self.test)(value);
        };
        match value {
            Value::Object(fields) => match fields.get(step.as_str()) {
                Some(child) => self.walk(child, rest),
                None => {
                    self.missing = true;
                    false
                }
            },
            Value::Array(items) => {
                let index = array_index(step);
                let indexed = index.and_then(|i| items.get(i));
                let both = indexed.is_some() && items.iter().any(Value::is_object);
                // (Once set, `missing` needs no second scan of the elements.)
                if !self.missing
                    && (items.is_empty()
                        || (index.is_none() && !items.iter().all(Value::is_object)))
                {
                    self.missing = true;
                }
                // Like MongoDB, a step into an array also tries the step on each element that
                // is an object (one level: arrays inside arrays are not entered), numeric
                // steps included: an object without that key is a branch without a value.
                indexed.is_some_and(|child| self.enter(child, rest, both))
                    || items
                        .iter()
                        .filter(|item| item.is_object())
                        .any(|item| self.enter(item, path, both))
            }
            _ => {
                self.missing = true;
                false
            }
        }
    }

    /// [`Walk::walk`] into `value`, unless `memo` and it was walked with as many steps left.
    fn enter(&mut self, value: &'v Value, path: &[String], memo: bool) -> bool {
        if memo {
            let seen = self.seen.get_or_insert_with(HashSet::default);
            if !seen.insert((std::ptr::from_ref(value), path.len())) {
                // Walked before without a match (a match ends the whole walk).
                return false;
            }
        }
        self.walk(value, path)
    }
}

/// The array index a path step names: a plain decimal (`0`, `12`), not `+1` or `01`, which
/// name only object keys.
fn array_index(step: &str) -> Option<usize> {
    let canonical =
        step.bytes().all(|b| b.is_ascii_digit()) && (step == "0" || !step.starts_with('0'));
    canonical.then(|| step.parse().ok()).flatten()
}

/// `test` on the value itself or, if it is an array, on any of its elements.
fn leaf_any(value: &Value, test: &mut dyn FnMut(&Value) -> bool) -> bool {
    test(value) || value.as_array().is_some_and(|items| items.iter().any(test))
}

fn compare(op: CmpOp, bound: &Bound, value: &Value) -> bool {
    let ordering = match (bound, value) {
        (Bound::Number(b), Value::Number(n)) => n.as_f64().and_then(|x| x.partial_cmp(b)),
        (Bound::String(b), Value::String(s)) => Some(s.as_str().cmp(b.as_str())),
        _ => None,
    };
    ordering.is_some_and(|o| match op {
        CmpOp::Gt => o.is_gt(),
        CmpOp::Gte => o.is_ge(),
        CmpOp::Lt => o.is_lt(),
        CmpOp::Lte => o.is_le(),
    })
}

/// Equality by value: numbers by numeric value, arrays element by element, objects key by
/// key whatever their order.
fn json_eq(a: &Value, b: &Value) -> bool {
    #[cfg(test)]
    tests::EQS.with(|n| n.set(n.get() + 1));
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, p)| y.get(key).is_some_and(|q| json_eq(p, q)))
        }
        _ => a == b,
    }
}

/// Builds the tree, counting nodes against [`FILTER_NODES_MAX`].
struct Parser {
    nodes: usize,
}

impl Parser {
    fn count(&mut self, at: &str, extra: usize, depth: usize) -> Result<()> {
        self.nodes += extra;
        if self.nodes > FILTER_NODES_MAX {
            return Err(bad(
                at,
                format!("the filter has more than {FILTER_NODES_MAX} parts (filter objects, conditions, operators and $in values)"),
            ));
        }
        if depth > FILTER_DEPTH_MAX {
            return Err(bad(
                at,
                format!("the filter nests deeper than {FILTER_DEPTH_MAX} levels"),
            ));
        }
        Ok(())
    }

    fn filter(&mut self, value: &Value, at: &str, depth: usize) -> Result<Filter> {
        self.count(at, 1, depth)?;
        let Value::Object(fields) = value else {
            return Err(bad(
                at,
                format!("a filter must be an object, got {}", kind(value)),
            ));
        };
        let mut parts = Vec::with_capacity(fields.len());
        for (key, operand) in fields {
            let here = join(at, key);
            let part = match key.as_str() {
                "$and" => Filter::All(self.filter_list(operand, &here, depth)?),
                "$or" => Filter::Any(self.filter_list(operand, &here, depth)?),
                "$not" => Filter::Not(Box::new(self.filter(operand, &here, depth + 1)?)),
                op if op.starts_with('$') => {
                    return Err(bad(&here, unknown_operator(op, "at the top of a filter (use $and, $or or $not; field operators go inside a field: { field: { $gt: 1 } })")));
                }
                _ => Filter::Field {
                    path: parse_path(key, &here)?,
                    cond: self.condition(operand, &here, depth + 1)?,
                },
            };
            parts.push(part);
        }
        Ok(match parts.len() {
            1 => parts.pop().unwrap_or(Filter::All(Vec::new())),
            _ => Filter::All(parts),
        })
    }

    fn filter_list(&mut self, value: &Value, at: &str, depth: usize) -> Result<Vec<Filter>> {
        match value {
            Value::Array(items) if !items.is_empty() => items
                .iter()
                .enumerate()
                .map(|(i, item)| self.filter(item, &format!("{at}[{i}]"), depth + 1))
                .collect(),
            Value::Array(_) => Err(bad(at, "needs at least one filter, got an empty array")),
            other => Err(bad(
                at,
                format!("needs an array of filters, got {}", kind(other)),
            )),
        }
    }

    /// A field's condition: an object of operators, or a bare value meaning `$eq`.
    fn condition(&mut self, value: &Value, at: &str, depth: usize) -> Result<Cond> {
        self.count(at, 1, depth)?;
        match value {
            Value::Object(ops) if ops.keys().any(|k| k.starts_with('$')) => {
                self.operators(ops, at, depth)
            }
            _ => Ok(Cond::Eq(literal(value, at)?)),
        }
    }

    fn operators(&mut self, ops: &Map<String, Value>, at: &str, depth: usize) -> Result<Cond> {
        if let Some(field) = ops.keys().find(|k| !k.starts_with('$')) {
            return Err(bad(at, format!("mixes operators and the field '{field}'; put nested fields in a dotted path ('a.b': ...)")));
        }
        let mut conds = Vec::with_capacity(ops.len());
        for (op, operand) in ops {
            let here = join(at, op);
            self.count(&here, 1, depth + 1)?;
            let cond = match op.as_str() {
                "$eq" => Cond::Eq(literal(operand, &here)?),
                "$ne" => Cond::Not(Box::new(Cond::Eq(literal(operand, &here)?))),
                "$gt" => Cond::Cmp(CmpOp::Gt, bound(operand, &here)?),
                "$gte" => Cond::Cmp(CmpOp::Gte, bound(operand, &here)?),
                "$lt" => Cond::Cmp(CmpOp::Lt, bound(operand, &here)?),
                "$lte" => Cond::Cmp(CmpOp::Lte, bound(operand, &here)?),
                "$in" => Cond::In(Choices::new(self.values(operand, &here)?)),
                "$nin" => Cond::Not(Box::new(Cond::In(Choices::new(
                    self.values(operand, &here)?,
                )))),
                "$exists" => match operand {
                    Value::Bool(b) => Cond::Exists(*b),
                    other => {
                        return Err(bad(
                            &here,
                            format!("needs true or false, got {}", kind(other)),
                        ))
                    }
                },
                "$not" => match operand {
                    Value::Object(inner) if !inner.is_empty() => {
                        Cond::Not(Box::new(self.operators(inner, &here, depth + 1)?))
                    }
                    other => {
                        return Err(bad(
                            &here,
                            format!(
                                "needs an object of operators ({{ $not: {{ $gt: 5 }} }}), got {}",
                                kind(other)
                            ),
                        ))
                    }
                },
                "$and" | "$or" => {
                    return Err(bad(&here, format!("{op} combines whole filters and belongs at the top ({{ {op}: [{{ field: ... }}, ...] }}), not inside a field")));
                }
                other => return Err(bad(&here, unknown_operator(other, "on a field"))),
            };
            conds.push(cond);
        }
        Ok(match conds.len() {
            1 => conds.pop().unwrap_or(Cond::All(Vec::new())),
            _ => Cond::All(conds),
        })
    }

    fn values(&mut self, value: &Value, at: &str) -> Result<Vec<Value>> {
        let Value::Array(items) = value else {
            return Err(bad(
                at,
                format!("needs an array of values, got {}", kind(value)),
            ));
        };
        self.count(at, items.len(), 0)?;
        items
            .iter()
            .enumerate()
            .map(|(i, item)| literal(item, &format!("{at}[{i}]")))
            .collect()
    }
}

/// A literal value to compare with. Operators inside it are refused: `{ a: { b: { $gt: 1 } } }`
/// is almost always meant as `{ 'a.b': { $gt: 1 } }`.
fn literal(value: &Value, at: &str) -> Result<Value> {
    /// The first operator inside `value`, or an error if it nests too deep to check.
    fn find_operator(value: &Value, depth: usize) -> std::result::Result<Option<&str>, ()> {
        if depth > FILTER_DEPTH_MAX {
            return Err(());
        }
        let mut found = None;
        match value {
            Value::Object(fields) => {
                for (k, v) in fields {
                    if k.starts_with('$') {
                        return Ok(Some(k.as_str()));
                    }
                    found = found.or(find_operator(v, depth + 1)?);
                }
            }
            Value::Array(items) => {
                for item in items {
                    found = found.or(find_operator(item, depth + 1)?);
                }
            }
            _ => {}
        }
        Ok(found)
    }
    match find_operator(value, 0) {
        Err(()) => Err(bad(at, format!("the value nests deeper than {FILTER_DEPTH_MAX} levels"))),
        Ok(Some(op)) => Err(bad(at, format!("the value holds the operator {op}; to test a nested field use a dotted path ('a.b': {{ {op}: ... }})"))),
        Ok(None) => Ok(value.clone()),
    }
}

fn bound(value: &Value, at: &str) -> Result<Bound> {
    match value {
        Value::Number(n) => n
            .as_f64()
            .map(Bound::Number)
            .ok_or_else(|| bad(at, format!("the number {n} is out of range"))),
        Value::String(s) => Ok(Bound::String(s.clone())),
        other => Err(bad(
            at,
            format!("needs a number or a string, got {}", kind(other)),
        )),
    }
}

fn parse_path(key: &str, at: &str) -> Result<Vec<String>> {
    if key.len() > FILTER_PATH_BYTES_MAX {
        return Err(bad(
            at,
            format!(
                "the field path is {} bytes, the limit is {FILTER_PATH_BYTES_MAX}",
                key.len()
            ),
        ));
    }
    let steps: Vec<String> = key.split('.').map(str::to_owned).collect();
    if steps.iter().any(String::is_empty) {
        return Err(bad(
            at,
            "bad field path: empty step (a leading, trailing or doubled '.')",
        ));
    }
    if let Some(step) = steps.iter().find(|s| s.starts_with('$')) {
        return Err(bad(
            at,
            format!("bad field path: step '{step}' starts with '$'"),
        ));
    }
    if steps.len() > FILTER_DEPTH_MAX {
        return Err(bad(
            at,
            format!("bad field path: more than {FILTER_DEPTH_MAX} steps"),
        ));
    }
    Ok(steps)
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_owned()
    } else {
        format!("{at}.{key}")
    }
}

fn unknown_operator(op: &str, place: &str) -> String {
    const KNOWN: &str =
        "$eq $ne $gt $gte $lt $lte $in $nin $exists $not, and $and $or $not at the top";
    format!("unknown operator {op} {place}; known: {KNOWN}")
}

fn bad(at: &str, reason: impl std::fmt::Display) -> Error {
    if at.is_empty() {
        Error::invalid(format!("invalid filter: {reason}"))
    } else {
        Error::invalid(format!("invalid filter at '{at}': {reason}"))
    }
}

fn kind(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.len() <= 40 => format!("the string {s:?}"),
        Value::String(_) => "a string".to_owned(),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    thread_local! {
        /// `Walk::walk` calls on this thread: the work an evaluation did.
        pub(super) static WALKS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
        /// `json_eq` calls on this thread.
        pub(super) static EQS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    #[test]
    fn a_long_in_is_looked_up_not_compared_pair_by_pair() {
        // 9,000 choices over a 100,000-element array field: one lookup per element, where
        // comparing every pair took ~2.5 s per record.
        let doc = json!({ "a": (0..100_000).collect::<Vec<i64>>() });
        let choices: Vec<i64> = (0..9_000).map(|i| -1 - i).collect();
        let filter = parse(json!({ "a": { "$in": choices } }));
        EQS.with(|n| n.set(0));
        assert!(!filter.matches(Some(&doc)));
        assert_eq!(EQS.with(std::cell::Cell::get), 0);
        // JSON equality still decides: numbers by value, -0 as 0, objects whatever their
        // key order, null for a missing field; $nin is its negation.
        let doc = json!({ "n": 1, "z": -0.0, "s": "x", "b": false, "o": { "p": 1, "q": [2] } });
        for (filter, holds) in [
            (json!({ "n": { "$in": [1.0, "1"] } }), true),
            (json!({ "n": { "$in": ["1", true] } }), false),
            (json!({ "z": { "$in": [0] } }), true),
            (json!({ "s": { "$in": ["y", "x"] } }), true),
            (json!({ "b": { "$in": [0, false] } }), true),
            (json!({ "b": { "$in": [0, null] } }), false),
            (json!({ "o": { "$in": [{ "q": [2.0], "p": 1 }] } }), true),
            (json!({ "o": { "$in": [{ "q": [2, 3], "p": 1 }] } }), false),
            (json!({ "missing": { "$in": [null] } }), true),
            (json!({ "missing": { "$in": [1] } }), false),
            (json!({ "n": { "$nin": [2, 3] } }), true),
            (json!({ "n": { "$nin": [1] } }), false),
        ] {
            assert_eq!(parse(filter.clone()).matches(Some(&doc)), holds, "{filter}");
        }
    }

    #[test]
    fn numeric_steps_through_nested_arrays_walk_each_value_once_per_step() {
        // {"0":[{"0":[ ... "leaf" ... ]}]}: 31 object/array pairs, 254 bytes of JSON. A path
        // of 30 "0" steps reaches each of its 63 values by two routes at every array; walked
        // without the memo that was ~1.6^30 calls (a search over one such record took
        // minutes), with it at most values x (steps + 1).
        let mut doc = json!("leaf");
        for _ in 0..31 {
            doc = json!({ "0": [doc] });
        }
        let key = ["0"; 30].join(".");
        let filter = parse(json!({ key: "nope" }));
        WALKS.with(|n| n.set(0));
        assert!(!filter.matches(Some(&doc)));
        let walks = WALKS.with(std::cell::Cell::get);
        assert!(walks <= 63 * 31, "{walks} walks for 63 values and 30 steps");
        // The memo loses no match: each route still reaches what it reached before.
        let hit = parse(json!({ ["0"; 4].join("."): { "$exists": true } }));
        assert!(hit.matches(Some(&doc)));
        let mut shallow = json!({ "0": [{ "0": "x" }, { "1": "y" }] });
        assert!(parse(json!({ "0.0": { "0": "x" } })).matches(Some(&shallow)));
        assert!(parse(json!({ "0.1": "y" })).matches(Some(&shallow)));
        assert!(parse(json!({ "0.0": "x" })).matches(Some(&shallow)));
        shallow["0"][0] = json!({ "2": "z" });
        assert!(!parse(json!({ "0.0": "x" })).matches(Some(&shallow)));
    }

    #[test]
    fn only_a_plain_decimal_step_indexes_an_array() {
        let doc = json!({ "tags": ["a", "b"], "keyed": { "01": "c", "+1": "d" } });
        assert!(parse(json!({ "tags.1": "b" })).matches(Some(&doc)));
        for key in ["tags.+1", "tags.01", "tags.1 "] {
            assert!(!parse(json!({ key: "b" })).matches(Some(&doc)), "{key}");
        }
        // As object keys they are plain names.
        assert!(parse(json!({ "keyed.01": "c" })).matches(Some(&doc)));
        assert!(parse(json!({ "keyed.+1": "d" })).matches(Some(&doc)));
    }

    fn parse(value: Value) -> Filter {
        Filter::parse(&value).unwrap_or_else(|e| panic!("{value} should parse: {e}"))
    }

    fn error(value: Value) -> String {
        match Filter::parse(&value) {
            Ok(f) => panic!("{value} should be refused, parsed as {f:?}"),
            Err(e) => {
                assert_eq!(e.code(), "KEEL_INVALID_ARGUMENT");
                e.to_string()
            }
        }
    }

    fn doc() -> Value {
        json!({
            "title": "Dune",
            "price": 12.5,
            "year": 1965,
            "stock": 0,
            "draft": false,
            "note": null,
            "tags": ["sf", "classic"],
            "ratings": [4, 5, 3],
            "author": { "name": "Herbert", "born": 1920, "address": { "city": "Tacoma" } },
            "editions": [ { "year": 1965, "lang": "en" }, { "year": 1970, "lang": "fr" } ],
            "matrix": [[1, 2], [3]],
            "dims": { "w": 1, "h": 2 },
        })
    }

    /// Asserts which of `filters` match `doc()`.
    fn check(cases: &[(Value, bool)]) {
        let d = doc();
        for (filter, want) in cases {
            assert_eq!(
                parse(filter.clone()).matches(Some(&d)),
                *want,
                "filter {filter}"
            );
        }
    }

    #[test]
    fn bare_values_and_eq() {
        check(&[
            (json!({}), true),
            (json!({ "title": "Dune" }), true),
            (json!({ "title": "dune" }), false),
            (json!({ "title": { "$eq": "Dune" } }), true),
            (json!({ "year": 1965.0 }), true), // numbers compare by value
            (json!({ "price": 12.5, "year": 1965 }), true), // keys are ANDed
            (json!({ "price": 12.5, "year": 1966 }), false),
            (json!({ "draft": false }), true),
            (json!({ "draft": 0 }), false), // no cross-type equality
            (json!({ "stock": false }), false),
            (json!({ "missing": "x" }), false),
            (json!({ "dims": { "h": 2, "w": 1 } }), true), // key order does not matter
            (json!({ "dims": { "w": 1 } }), false),        // whole-object equality
        ]);
    }

    #[test]
    fn arrays_match_whole_or_by_element() {
        check(&[
            (json!({ "tags": "sf" }), true),
            (json!({ "tags": "horror" }), false),
            (json!({ "tags": ["sf", "classic"] }), true),
            (json!({ "tags": ["classic", "sf"] }), false), // order matters for arrays
            (json!({ "ratings": { "$gt": 4 } }), true),    // some element > 4
            (json!({ "ratings": { "$gt": 5 } }), false),
            (json!({ "ratings": { "$in": [1, 3] } }), true),
            (json!({ "ratings": { "$nin": [1, 3] } }), false),
            (json!({ "ratings": { "$ne": 4 } }), false), // an element equals 4
            (json!({ "matrix": [3] }), true),            // an element equal to the array
            (json!({ "matrix": 3 }), false),             // nested arrays are not flattened
            (json!({ "tags.0": "sf" }), true),           // numeric step indexes
            (json!({ "tags.1": "sf" }), false),
            (json!({ "tags.5": { "$exists": true } }), false),
        ]);
    }

    #[test]
    fn dotted_paths_into_objects_and_arrays_of_objects() {
        check(&[
            (json!({ "author.name": "Herbert" }), true),
            (json!({ "author.address.city": "Tacoma" }), true),
            (json!({ "author.address.zip": { "$exists": false } }), true),
            (json!({ "author.name.first": { "$exists": true } }), false), // into a string
            (json!({ "editions.lang": "fr" }), true),                     // each element object
            (json!({ "editions.year": { "$gt": 1968 } }), true),
            (json!({ "editions.year": { "$gt": 1970 } }), false),
            (json!({ "editions.1.lang": "fr" }), true),
            (json!({ "editions.0.lang": "fr" }), false),
        ]);
    }

    #[test]
    fn comparisons_are_within_a_type() {
        check(&[
            (json!({ "price": { "$gt": 12 } }), true),
            (json!({ "price": { "$gt": 12.5 } }), false),
            (json!({ "price": { "$gte": 12.5 } }), true),
            (json!({ "price": { "$lt": 12.5 } }), false),
            (json!({ "price": { "$lte": 12.5 } }), true),
            (json!({ "price": { "$gt": 10, "$lt": 13 } }), true), // operators are ANDed
            (json!({ "price": { "$gt": 10, "$lt": 12 } }), false),
            (json!({ "title": { "$gt": "Alpha" } }), true),
            (json!({ "title": { "$lt": "Dunes" } }), true),
            (json!({ "title": { "$gt": "dune" } }), false), // 'D' < 'd' in bytes
            (json!({ "title": { "$gt": 1 } }), false),      // string vs number: no match
            (json!({ "price": { "$lt": "z" } }), false),
            (json!({ "draft": { "$lt": 1 } }), false),
            (json!({ "note": { "$lt": 1 } }), false),
            (json!({ "missing": { "$lt": 1 } }), false),
            (json!({ "missing": { "$not": { "$gt": 1 } } }), true), // negation matches missing
            (json!({ "title": { "$not": { "$gt": 1 } } }), true),   // and other types
            (json!({ "price": { "$not": { "$gt": 1 } } }), false),
        ]);
    }

    #[test]
    fn missing_null_and_exists() {
        check(&[
            (json!({ "note": null }), true),
            (json!({ "missing": null }), true), // null matches missing, as in MongoDB
            (json!({ "title": null }), false),
            (json!({ "missing": { "$in": [1, null] } }), true),
            (json!({ "missing": { "$in": [1] } }), false),
            (json!({ "missing": { "$ne": 1 } }), true),
            (json!({ "missing": { "$nin": [1] } }), true),
            (json!({ "missing": { "$ne": null } }), false),
            (json!({ "note": { "$ne": null } }), false),
            (json!({ "title": { "$ne": null } }), true),
            (json!({ "note": { "$exists": true } }), true), // present, though null
            (json!({ "missing": { "$exists": true } }), false),
            (json!({ "missing": { "$exists": false } }), true),
            (json!({ "stock": { "$exists": true } }), true),
        ]);
    }

    #[test]
    fn null_through_arrays_is_mongodb_9s_missing_branch() {
        // The expectations of MongoDB 9.0's null_query_semantics.js and
        // dotted_path_in_null.js (SERVER-36681) for `{"a.b": null}`, and for `$in: [null]`,
        // which must agree; `$ne` and `$nin` are their negations.
        let cases = [
            (json!({ "a": [{ "b": 1 }, {}] }), true), // one element lacks b
            (json!({ "a": [{ "b": 1 }] }), false),
            (json!({ "a": [{ "b": null }] }), true),
            (json!({ "a": [] }), true),
            (json!({ "a": [1, 2] }), true),
            (json!({ "a": [[]] }), true),
            (json!({ "a": [null, null] }), true),
            (json!({ "a": [5, { "b": 1 }] }), true),
            (json!({ "a": [[{ "b": 2 }], { "b": 3 }] }), true),
            (json!({ "a": "x" }), true),
            (json!({ "a": {} }), true),
            (json!({ "a": null }), true),
            (json!({}), true),
            (json!({ "a": { "b": [] } }), false), // b is there: an empty array, not null
            (json!({ "a": [{ "b": [null] }] }), true),
        ];
        let filters = [
            (json!({ "a.b": null }), true),
            (json!({ "a.b": { "$in": [null, 7] } }), true),
            (json!({ "a.b": { "$ne": null } }), false),
            (json!({ "a.b": { "$nin": [null] } }), false),
        ];
        for (filter, positive) in &filters {
            let filter = parse(filter.clone());
            for (doc, null) in &cases {
                assert_eq!(
                    filter.matches(Some(doc)),
                    null == positive,
                    "{filter:?} on {doc}"
                );
            }
        }
        // No payload is a missing branch too.
        assert!(parse(json!({ "a.b": null })).matches(None));
    }

    #[test]
    fn null_through_a_numeric_step_follows_mongodbs_two_routes() {
        // A numeric step takes the element at that index and also looks the step up as a key
        // of each object element (path.cpp), so an object without that key is a branch
        // without a value; other elements are not branches under a numeric step.
        let null_at = |path: &str, doc: Value| parse(json!({ path: null })).matches(Some(&doc));
        assert!(null_at("a.0.b", json!({ "a": [{ "b": 1 }] }))); // {"b":1} has no key "0"
        assert!(!null_at("a.0", json!({ "a": [5, 6] })));
        assert!(null_at("a.0", json!({ "a": [] })));
        assert!(null_at("a.5", json!({ "a": [1, 2] }))); // nothing there, as $exists: false says
        assert!(null_at("a.1.b", json!({ "a": [5] })));
        assert!(null_at("a.0", json!({ "a": [null] })));
        assert!(!null_at("a.1", json!({ "a": [{ "1": 2 }, 3] }))); // both routes give values
        assert!(!parse(json!({ "a.0.b": { "$ne": null } }))
            .matches(Some(&json!({ "a": [{ "b": 1 }] }))));
    }

    #[test]
    fn logical_operators() {
        check(&[
            (
                json!({ "$and": [{ "year": 1965 }, { "title": "Dune" }] }),
                true,
            ),
            (
                json!({ "$and": [{ "year": 1965 }, { "title": "Emma" }] }),
                false,
            ),
            (json!({ "$or": [{ "year": 1 }, { "title": "Dune" }] }), true),
            (
                json!({ "$or": [{ "year": 1 }, { "title": "Emma" }] }),
                false,
            ),
            (json!({ "$not": { "title": "Emma" } }), true),
            (json!({ "$not": { "title": "Dune" } }), false),
            (
                json!({ "$or": [{ "$and": [{ "year": 1965 }, { "stock": { "$gt": 0 } }] }, { "tags": "sf" }] }),
                true,
            ),
            (
                json!({ "year": 1965, "$or": [{ "stock": 1 }, { "stock": 2 }] }),
                false,
            ),
            (
                json!({ "year": { "$in": [1964, 1965] }, "$not": { "draft": true } }),
                true,
            ),
        ]);
    }

    #[test]
    fn no_payload_is_an_empty_object() {
        let matches = |f: Value| parse(f).matches(None);
        assert!(matches(json!({})));
        assert!(matches(json!({ "a": { "$exists": false } })));
        assert!(matches(json!({ "a": null })));
        assert!(matches(json!({ "a": { "$ne": 1 } })));
        assert!(!matches(json!({ "a": 1 })));
        assert!(!matches(json!({ "a": { "$exists": true } })));
        assert!(!matches(json!({ "a": { "$gte": 0 } })));
        // A payload that is not an object has no fields.
        assert!(!parse(json!({ "a": 1 })).matches(Some(&json!(1))));
        assert!(parse(json!({ "a": { "$exists": false } })).matches(Some(&json!("text"))));
    }

    #[test]
    fn bad_filters_name_the_bad_part() {
        let cases: &[(Value, &str)] = &[
            (json!([]), "a filter must be an object, got an array"),
            (json!(null), "a filter must be an object, got null"),
            (
                json!({ "price": { "$foo": 1 } }),
                "at 'price.$foo': unknown operator $foo",
            ),
            (
                json!({ "$where": "x" }),
                "at '$where': unknown operator $where",
            ),
            (
                json!({ "price": { "$gt": [1] } }),
                "at 'price.$gt': needs a number or a string, got an array",
            ),
            (
                json!({ "price": { "$lte": null } }),
                "at 'price.$lte': needs a number or a string, got null",
            ),
            (json!({ "price": { "$gt": true } }), "got the boolean true"),
            (
                json!({ "tag": { "$in": "a" } }),
                "at 'tag.$in': needs an array of values",
            ),
            (
                json!({ "tag": { "$nin": {} } }),
                "at 'tag.$nin': needs an array of values, got an object",
            ),
            (
                json!({ "tag": { "$exists": 1 } }),
                "at 'tag.$exists': needs true or false",
            ),
            (
                json!({ "tag": { "$not": 5 } }),
                "at 'tag.$not': needs an object of operators",
            ),
            (
                json!({ "tag": { "$not": {} } }),
                "at 'tag.$not': needs an object of operators",
            ),
            (
                json!({ "tag": { "$not": { "$bad": 1 } } }),
                "at 'tag.$not.$bad': unknown operator",
            ),
            (
                json!({ "$and": [] }),
                "at '$and': needs at least one filter",
            ),
            (
                json!({ "$or": {} }),
                "at '$or': needs an array of filters, got an object",
            ),
            (
                json!({ "$or": [{ "a": 1 }, 3] }),
                "at '$or[1]': a filter must be an object, got the number 3",
            ),
            (
                json!({ "$not": [] }),
                "at '$not': a filter must be an object",
            ),
            (
                json!({ "a": { "$and": [{}] } }),
                "at 'a.$and': $and combines whole filters",
            ),
            (
                json!({ "a": { "$gt": 1, "b": 2 } }),
                "at 'a': mixes operators and the field 'b'",
            ),
            (
                json!({ "a": { "b": { "$gt": 1 } } }),
                "at 'a': the value holds the operator $gt",
            ),
            (
                json!({ "a": { "$in": [{ "$gt": 1 }] } }),
                "at 'a.$in[0]': the value holds the operator $gt",
            ),
            (json!({ "": 1 }), "bad field path: empty step"),
            (
                json!({ "a..b": 1 }),
                "at 'a..b': bad field path: empty step",
            ),
            (json!({ ".a": 1 }), "bad field path: empty step"),
            (json!({ "a.": 1 }), "bad field path: empty step"),
            (
                json!({ "a.$b": 1 }),
                "at 'a.$b': bad field path: step '$b' starts with '$'",
            ),
        ];
        for (filter, want) in cases {
            let message = error(filter.clone());
            assert!(
                message.contains(want),
                "filter {filter}: {message:?} lacks {want:?}"
            );
        }
    }

    #[test]
    fn limits_are_enforced() {
        let long = "a".repeat(FILTER_PATH_BYTES_MAX + 1);
        assert!(error(json!({ long: 1 })).contains("limit is 1024"));
        let mut deep = json!({ "a": 1 });
        for _ in 0..FILTER_DEPTH_MAX + 1 {
            deep = json!({ "$not": deep });
        }
        assert!(error(deep).contains("deeper than 32"));
        // Every part counts: the filter object, the field's condition, the `$in` operator
        // and each value, so 3 + n parts for n values (README, "Filters").
        let values = |n: usize| -> Vec<Value> { (0..n).map(|i| json!(i)).collect() };
        let at_limit = json!({ "a": { "$in": values(FILTER_NODES_MAX - 3) } });
        assert!(Filter::parse(&at_limit).is_ok());
        let past = json!({ "a": { "$in": values(FILTER_NODES_MAX - 2) } });
        assert!(error(past).contains("more than 10000 parts"));
        let mut nested = json!(1);
        for _ in 0..FILTER_DEPTH_MAX + 1 {
            nested = json!([nested]);
        }
        assert!(error(json!({ "a": nested })).contains("the value nests deeper than 32"));
        let steps = vec!["a"; FILTER_DEPTH_MAX + 1].join(".");
        assert!(error(json!({ steps: 1 })).contains("more than 32 steps"));
        let text = format!("{{\"a\":\"{}\"}}", "x".repeat(FILTER_JSON_BYTES_MAX));
        assert!(Filter::parse_json(&text).is_err());
        assert!(Filter::parse_json("{\"a\":").is_err());
        assert_eq!(
            Filter::parse_json("{\"a\":1}").ok(),
            Some(Filter::Field {
                path: vec!["a".into()],
                cond: Cond::Eq(json!(1))
            })
        );
    }

    #[test]
    fn ne_and_nin_negate_eq_and_in_on_every_document() {
        let docs = [
            doc(),
            json!({}),
            json!({ "a": [1, 2] }),
            json!({ "a": null }),
            json!({ "a": 1 }),
        ];
        for d in &docs {
            for v in [json!(1), json!(null), json!([1, 2]), json!("x")] {
                let eq = parse(json!({ "a": { "$eq": v } })).matches(Some(d));
                let ne = parse(json!({ "a": { "$ne": v } })).matches(Some(d));
                assert_ne!(eq, ne, "doc {d} value {v}");
                let in_ = parse(json!({ "a": { "$in": [v, 7] } })).matches(Some(d));
                let nin = parse(json!({ "a": { "$nin": [v, 7] } })).matches(Some(d));
                assert_ne!(in_, nin, "doc {d} value {v}");
            }
        }
    }
}
