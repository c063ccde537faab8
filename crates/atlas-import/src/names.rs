//! Table and column names as the databases' users write them.
//!
//! A [`TableName`] is what the user wrote: `contacts`, `analytics.contacts`,
//! `"my.table"` (a dot inside a name needs quotes, a quote inside quotes is
//! doubled), each part remembering whether it was quoted. A database turns it
//! into a [`TableRef`]: unquoted parts follow its folding rule (PostgreSQL
//! lowercases them, MySQL/MariaDB and SQLite keep them), quoted parts are
//! exact, and the connection's default schema is left implicit, so
//! `public.contacts` and `contacts` are one table on PostgreSQL.
//!
//! New tables and columns get the plain form every database reads without
//! quotes ([`normalize`]: lowercase snake_case) unless the names are kept
//! ([`NamePolicy::Keep`]).

use std::fmt;
use std::str::FromStr;

use crate::error::{AtlasError, Result};

/// One part of a name as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ident {
    /// The text, quotes removed.
    pub value: String,
    /// Whether it was quoted (then it is exact: no folding, no normalizing).
    pub quoted: bool,
}

impl Ident {
    /// An unquoted part.
    pub fn plain(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            quoted: false,
        }
    }

    /// A quoted part: exactly this text.
    pub fn quoted(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            quoted: true,
        }
    }
}

/// A table name as the user wrote it: `table` or `schema.table`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName {
    /// The schema (the database on MySQL/MariaDB), if given.
    pub schema: Option<Ident>,
    /// The table.
    pub table: Ident,
}

impl TableName {
    /// Reads a name the way SQL writes one: parts separated by dots, a part
    /// in double quotes exact (`""` is a quote inside it).
    pub fn parse(text: &str) -> Result<Self> {
        let error = |what: &str| {
            AtlasError::Usage(format!(
                "invalid table name '{text}': {what} (write schema.table; quote a name that holds a dot or a quote: \"my.table\")"
            ))
        };
        let mut parts: Vec<Ident> = Vec::new();
        let mut chars = text.trim().chars().peekable();
        loop {
            let part = if chars.peek() == Some(&'"') {
                chars.next();
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            value.push('"');
                        }
                        Some('"') => break,
                        Some(c) => value.push(c),
                        None => return Err(error("a quote is never closed")),
                    }
                }
                Ident::quoted(value)
            } else {
                let mut value = String::new();
                while let Some(&c) = chars.peek() {
                    if c == '.' {
                        break;
                    }
                    if c == '"' {
                        return Err(error("a quote inside an unquoted part"));
                    }
                    value.push(c);
                    chars.next();
                }
                let value = value.trim().to_string();
                if value.is_empty() {
                    return Err(error("an empty part"));
                }
                Ident::plain(value)
            };
            parts.push(part);
            match chars.next() {
                None => break,
                Some('.') => continue,
                Some(_) => return Err(error("text after a quoted part")),
            }
        }
        Self::from_parts(parts).map_err(|_| error("more than two parts"))
    }

    /// A name of one or two parts (`table`, `schema.table`).
    pub fn from_parts(mut parts: Vec<Ident>) -> Result<Self> {
        match parts.len() {
            1 => Ok(Self {
                schema: None,
                table: parts.remove(0),
            }),
            2 => {
                let table = parts.remove(1);
                Ok(Self {
                    schema: Some(parts.remove(0)),
                    table,
                })
            }
            n => Err(AtlasError::Usage(format!(
                "a table name has one or two parts (schema.table), not {n}"
            ))),
        }
    }
}

impl TableName {
    /// The table this name means on a database that folds unquoted parts to
    /// lowercase (`fold_to_lowercase`, as PostgreSQL does) and whose
    /// connection's default schema is `default_schema` (left implicit).
    pub fn resolve(&self, fold_to_lowercase: bool, default_schema: Option<&str>) -> TableRef {
        let part = |i: &Ident| {
            if fold_to_lowercase && !i.quoted {
                i.value.to_ascii_lowercase()
            } else {
                i.value.clone()
            }
        };
        let schema = self
            .schema
            .as_ref()
            .map(part)
            .filter(|s| Some(s.as_str()) != default_schema);
        TableRef::new(schema, part(&self.table))
    }
}

impl FromStr for TableName {
    type Err = AtlasError;

    fn from_str(s: &str) -> Result<Self> {
        TableName::parse(s)
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let part = |i: &Ident| {
            if i.quoted {
                quote(&i.value)
            } else {
                i.value.clone()
            }
        };
        match &self.schema {
            Some(schema) => write!(f, "{}.{}", part(schema), part(&self.table)),
            None => f.write_str(&part(&self.table)),
        }
    }
}

/// A table as one database names it: parts exact (folded already), the
/// connection's default schema left implicit (`None`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct TableRef {
    /// The schema (the database on MySQL/MariaDB); `None`: the connection's
    /// default (PostgreSQL's `current_schema()`, the URL's database, `main`).
    pub schema: Option<String>,
    /// The table.
    pub name: String,
}

impl TableRef {
    /// A table in `schema` (`None`: the default schema).
    pub fn new(schema: Option<String>, name: impl Into<String>) -> Self {
        Self {
            schema,
            name: name.into(),
        }
    }

    /// A table of the default schema, by its exact name.
    pub fn unqualified(name: impl Into<String>) -> Self {
        Self::new(None, name)
    }

    /// The table as SQL names it: `"schema"."name"` (every part quoted, so
    /// any name is a name, never SQL).
    pub fn sql(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", quote(schema), quote(&self.name)),
            None => quote(&self.name),
        }
    }

    /// The same schema with another table name (a table beside this one).
    pub fn sibling(&self, name: impl Into<String>) -> Self {
        Self::new(self.schema.clone(), name)
    }

    /// How messages, locks and the metadata tables (`file_imports.table_name`,
    /// `import_history.table_name`) name the table: `name` or `schema.name`,
    /// a part quoted only when its plain text would read as something else.
    pub fn key(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", key_part(schema), key_part(&self.name)),
            None => key_part(&self.name),
        }
    }
}

impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

impl From<&str> for TableRef {
    fn from(name: &str) -> Self {
        TableRef::unqualified(name)
    }
}

/// `"name"` with quotes doubled.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A part as plain text when it reads back as itself, else quoted.
fn key_part(part: &str) -> String {
    let plain = !part.is_empty()
        && !part.starts_with(|c: char| c.is_ascii_digit())
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if plain { part.to_string() } else { quote(part) }
}

/// Whether new tables and columns take the database's plain form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NamePolicy {
    /// Lowercase snake_case (`E-Mail` -> `e_mail`, `MyContacts` ->
    /// `mycontacts`), so no query needs quotes.
    #[default]
    Normalize,
    /// Exactly as the source (or the unquoted table name) has them.
    Keep,
}

impl fmt::Display for NamePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NamePolicy::Normalize => "normalize",
            NamePolicy::Keep => "keep",
        })
    }
}

impl FromStr for NamePolicy {
    type Err = AtlasError;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "normalize" | "normalise" => Ok(NamePolicy::Normalize),
            "keep" => Ok(NamePolicy::Keep),
            other => Err(AtlasError::Usage(format!(
                "unknown names policy '{other}': expected normalize or keep"
            ))),
        }
    }
}

/// The plain form of a name: lowercase, every run of other characters than
/// letters and digits one `_`, none at either end; empty if nothing is left.
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut gap = false;
    for c in name.chars() {
        if c.is_alphanumeric() {
            if gap && !out.is_empty() {
                out.push('_');
            }
            gap = false;
            out.extend(c.to_lowercase());
        } else {
            gap = true;
        }
    }
    out
}

/// The longest column name a database keeps: PostgreSQL cuts longer names
/// to 63 bytes, MySQL/MariaDB refuse more than 64 characters, SQLite keeps
/// any. A new table's names are cut to it here, so that `--explain` shows
/// them as they will be and two names cut to one are an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameLimit {
    /// Names of any length.
    Unlimited,
    /// At most this many bytes (cut on a character boundary).
    Bytes(usize),
    /// At most this many characters.
    Chars(usize),
}

/// The fewest bytes of a name that a database may have cut (PostgreSQL's
/// 63): a column name this long may be the start of a longer one.
pub const SHORTEST_CUT_NAME_BYTES: usize = 63;

impl NameLimit {
    /// The limit of `kind`'s column names.
    pub fn of(kind: crate::db::DbKind) -> Self {
        match kind {
            crate::db::DbKind::Postgres => NameLimit::Bytes(SHORTEST_CUT_NAME_BYTES),
            crate::db::DbKind::MySql => NameLimit::Chars(64),
            crate::db::DbKind::Sqlite => NameLimit::Unlimited,
        }
    }

    /// `name` cut to the limit.
    pub fn cut(self, name: &str) -> &str {
        let end = match self {
            NameLimit::Unlimited => name.len(),
            NameLimit::Bytes(max) => (0..=max.min(name.len()))
                .rev()
                .find(|&i| name.is_char_boundary(i))
                .unwrap_or(0),
            NameLimit::Chars(max) => name.char_indices().nth(max).map_or(name.len(), |(i, _)| i),
        };
        &name[..end]
    }
}

/// The name of the column at `position` (from 0) where a name is missing, or
/// nothing of it is left once normalized (`#`, `%`): `column_N`, N from 1.
pub fn placeholder_column_name(position: usize) -> String {
    format!("column_{}", position + 1)
}

/// The names of a new table's columns under `policy` (normalized names, or
/// [`placeholder_column_name`] where nothing is left), cut to `limit`; two
/// source columns that become one name are an error naming both.
pub fn new_column_names(
    source: &[String],
    policy: NamePolicy,
    limit: NameLimit,
) -> Result<Vec<String>> {
    let mut names: Vec<String> = Vec::with_capacity(source.len());
    for (i, original) in source.iter().enumerate() {
        let mut name = match policy {
            NamePolicy::Keep => original.clone(),
            NamePolicy::Normalize => normalize(original),
        };
        if name.is_empty() {
            name = placeholder_column_name(i);
        } else if policy == NamePolicy::Normalize && name.starts_with(|c: char| c.is_ascii_digit())
        {
            name = format!("_{name}");
        }
        name.truncate(limit.cut(&name).len());
        if let Some(first) = names.iter().position(|n| *n == name) {
            let keep = match policy {
                NamePolicy::Normalize => " or keep the names as they are (--names keep)",
                NamePolicy::Keep => "",
            };
            return Err(AtlasError::Usage(format!(
                "source columns '{}' and '{original}' would both become column '{name}' of the new table; \
                 rename one (MAP){keep}",
                source[first]
            )));
        }
        names.push(name);
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_as_sql_writes_them() {
        let n = TableName::parse("analytics.contacts").unwrap();
        assert_eq!(n.schema, Some(Ident::plain("analytics")));
        assert_eq!(n.table, Ident::plain("contacts"));
        let n = TableName::parse("\"my.table\"").unwrap();
        assert_eq!((n.schema, n.table), (None, Ident::quoted("my.table")));
        let n = TableName::parse("\"Sales \"\"EU\"\"\".\"Q1\"").unwrap();
        assert_eq!(n.schema, Some(Ident::quoted("Sales \"EU\"")));
        assert_eq!(n.to_string(), "\"Sales \"\"EU\"\"\".\"Q1\"");
        for bad in ["a.b.c", "a.", "\"open", "a\"b", "\"x\"y"] {
            assert!(TableName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resolving_folds_unquoted_parts_and_drops_the_default_schema() {
        let n = TableName::parse("Public.MyContacts").unwrap();
        assert_eq!(
            n.resolve(true, Some("public")),
            TableRef::unqualified("mycontacts")
        );
        assert_eq!(
            n.resolve(false, Some("test")),
            TableRef::new(Some("Public".into()), "MyContacts")
        );
        let n = TableName::parse("\"Public\".\"MyContacts\"").unwrap();
        assert_eq!(
            n.resolve(true, Some("public")),
            TableRef::new(Some("Public".into()), "MyContacts")
        );
    }

    #[test]
    fn keys_and_sql() {
        let t = TableRef::new(Some("analytics".into()), "contacts");
        assert_eq!(
            (t.key(), t.sql()),
            (
                "analytics.contacts".into(),
                "\"analytics\".\"contacts\"".into()
            )
        );
        assert_eq!(TableRef::unqualified("my.table").key(), "\"my.table\"");
        assert_eq!(TableRef::unqualified("Contacts").key(), "Contacts");
    }

    #[test]
    fn normalized_names() {
        assert_eq!(normalize("E-Mail"), "e_mail");
        assert_eq!(normalize("First Name"), "first_name");
        assert_eq!(normalize("MyContacts"), "mycontacts");
        assert_eq!(normalize("  Größe (cm) "), "größe_cm");
        let names = new_column_names(
            &[
                "Id".into(),
                "E-Mail".into(),
                "???".into(),
                "2024 total".into(),
            ],
            NamePolicy::Normalize,
            NameLimit::Unlimited,
        )
        .unwrap();
        assert_eq!(names, ["id", "e_mail", "column_3", "_2024_total"]);
        let err = new_column_names(
            &["E-Mail".into(), "e mail".into()],
            NamePolicy::Normalize,
            NameLimit::Unlimited,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("'E-Mail' and 'e mail' would both become column 'e_mail'")
        );
    }

    #[test]
    fn names_are_cut_to_the_database_limit() {
        let long = format!("{}é{}", "a".repeat(62), "b".repeat(10));
        assert_eq!(
            NameLimit::Bytes(63).cut(&long),
            "a".repeat(62),
            "not inside 'é'"
        );
        assert_eq!(
            NameLimit::Chars(64).cut(&long),
            format!("{}éb", "a".repeat(62))
        );
        assert_eq!(NameLimit::Unlimited.cut(&long), long);
        let names = new_column_names(
            &[long.clone(), "Short".into()],
            NamePolicy::Keep,
            NameLimit::Chars(64),
        )
        .unwrap();
        assert_eq!(
            names,
            [format!("{}éb", "a".repeat(62)), "Short".to_string()]
        );
        let twins = [format!("{long} one"), format!("{long} two")];
        let err = new_column_names(&twins, NamePolicy::Normalize, NameLimit::Bytes(63))
            .unwrap_err()
            .to_string();
        assert!(err.contains("would both become column 'aaaa"), "{err}");
    }
}
