//! The `IMPORT INTO` statement, parsed by wrapping DataFusion's `DFParser`:
//! a statement that starts with `IMPORT` is ours, anything else falls through to
//! DataFusion unchanged.
//!
//! ```sql
//! IMPORT INTO contacts [ (col, ...) ]
//!   FROM 'data/contacts.csv' | FROM ( <any DataFusion query> )
//!   [ FORMAT CSV | TSV | PARQUET | JSON | NDJSON | AVRO | XLSX | XML ]
//!   [ OPTIONS ( header 'true', delimiter ';', quote '"', escape '\', null 'NULL',
//!               comment '#', encoding 'latin1', compression 'gzip',
//!               infer 'strict' | 'text', ... ) ]
//!   [ MAP ( email = lower("E-mail"), ... ) ]
//!   [ KEY (email) ]
//!   [ ON DUPLICATE ERROR | SKIP | UPDATE ]
//!   [ ON DUPLICATE FILE ERROR | SKIP | ALLOW ]
//!   [ ON BAD VALUE ERROR | NULL | REJECT TO '<file>' ]
//!   [ CREATE TABLE IF NOT EXISTS | NEVER ]
//!   [ WITH ( partitions 4, chunk_rows 10000, strategy 'auto' | 'preload' | 'probe' | 'narrow' ) ];
//! ```
//!
//! `CHECK IMPORT ...` is the dry run; `EXPLAIN [ANALYZE] IMPORT ...` prints the
//! logical and physical plans (with the operators' metrics after running it).

use datafusion::sql::parser::{DFParser, DFParserBuilder, Statement as DFStatement};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion::sql::sqlparser::tokenizer::Token;

use crate::error::{AtlasError, Result};
use crate::names::{Ident, TableName};
use crate::options::{
    CreateTable, FilePolicy, ImportOptions, KeyStrategy, OnBadValue, OnDuplicate,
};
use crate::source::SourceOptions;

/// One statement of a script.
#[derive(Debug, Clone, PartialEq)]
pub enum AtlasStatement {
    /// `IMPORT INTO ...`
    Import(Box<ImportStatement>),
    /// `CHECK IMPORT INTO ...`: the dry run.
    CheckImport(Box<ImportStatement>),
    /// `EXPLAIN [ANALYZE] IMPORT INTO ...`
    ExplainImport {
        /// `ANALYZE`: run the import and show the operators' metrics.
        analyze: bool,
        /// The import.
        import: Box<ImportStatement>,
    },
    /// Any statement DataFusion parses (`CREATE EXTERNAL TABLE`, `SELECT`, `SET`, ...).
    DataFusion(Box<DFStatement>),
}

/// The `FROM` of an import.
#[derive(Debug, Clone, PartialEq)]
pub enum ImportFrom {
    /// `FROM 'path'`
    Path(String),
    /// `FROM ( <query> )`, as SQL text.
    Query(String),
}

impl Default for ImportFrom {
    fn default() -> Self {
        ImportFrom::Path(String::new())
    }
}

/// A parsed `IMPORT INTO` statement.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportStatement {
    /// Target table (`table`, `schema.table`, quoted parts exact).
    pub table: TableName,
    /// `IMPORT INTO t (a, b)`: names for the source's columns, in order.
    pub columns: Vec<String>,
    /// Where the rows come from.
    pub source: ImportFrom,
    /// `MAP (column = expression, ...)`, expressions as SQL text.
    pub map: Vec<(String, String)>,
    /// `FORMAT`, if given.
    pub format: Option<String>,
    /// `OPTIONS (name 'value', ...)`, names lower-cased.
    pub options: Vec<(String, String)>,
    /// `KEY (...)`.
    pub key: Vec<String>,
    /// `ON DUPLICATE ...`.
    pub on_duplicate: OnDuplicate,
    /// `ON DUPLICATE FILE ...`.
    pub on_duplicate_file: FilePolicy,
    /// `ON BAD VALUE ...`.
    pub on_bad_value: OnBadValue,
    /// `CREATE TABLE ...`.
    pub create_table: CreateTable,
    /// `WITH (partitions N)`.
    pub partitions: Option<usize>,
    /// `WITH (chunk_rows N)`.
    pub chunk_rows: Option<usize>,
    /// `WITH (strategy 'probe')`: how the check learns the existing keys.
    pub strategy: Option<KeyStrategy>,
}

impl ImportStatement {
    /// What `FORMAT` and `OPTIONS` say of the source (format and dialect,
    /// compression, inference); what they leave out goes by the file.
    pub fn source_options(&self) -> Result<SourceOptions> {
        let path = match &self.source {
            ImportFrom::Path(path) => Some(std::path::Path::new(path.as_str())),
            ImportFrom::Query(_) => None,
        };
        SourceOptions::parse(self.format.as_deref(), path, &self.options)
    }

    /// What the statement tells the import; what it leaves out is the
    /// default.
    pub fn import_options(&self) -> Result<ImportOptions> {
        let defaults = ImportOptions::default();
        let mut options = ImportOptions {
            columns: self.columns.clone(),
            map: self.map.clone(),
            on_duplicate: self.on_duplicate,
            file_policy: self.on_duplicate_file,
            on_bad_value: self.on_bad_value.clone(),
            create_table: self.create_table,
            strategy: self.strategy.unwrap_or(defaults.strategy),
            partitions: self.partitions.unwrap_or(defaults.partitions),
            chunk_rows: self.chunk_rows.unwrap_or(defaults.chunk_rows),
            source: self.source_options()?,
            ..defaults
        };
        options.set_key(self.key.iter().cloned());
        Ok(options)
    }
}

/// Parses a script of statements separated by `;`.
pub fn parse_statements(sql: &str) -> Result<Vec<AtlasStatement>> {
    let mut parser = DFParserBuilder::new(sql)
        .build()
        .map_err(|e| AtlasError::Usage(format!("SQL error: {e}")))?;
    let mut statements = Vec::new();
    loop {
        while parser.parser.consume_token(&Token::SemiColon) {}
        if parser.parser.peek_token() == Token::EOF {
            break;
        }
        let sql_error = |e: ParserError| AtlasError::Usage(format!("SQL error: {e}"));
        let statement = if peek_word(&parser, "IMPORT") {
            parser.parser.next_token();
            AtlasStatement::Import(Box::new(parse_import(&mut parser).map_err(sql_error)?))
        } else if peek_word(&parser, "CHECK") && peek_nth_word(&parser, 1, "IMPORT") {
            parser.parser.next_token();
            parser.parser.next_token();
            AtlasStatement::CheckImport(Box::new(parse_import(&mut parser).map_err(sql_error)?))
        } else if peek_word(&parser, "EXPLAIN")
            && (peek_nth_word(&parser, 1, "IMPORT")
                || (peek_nth_word(&parser, 1, "ANALYZE") && peek_nth_word(&parser, 2, "IMPORT")))
        {
            parser.parser.next_token();
            let analyze = parse_word(&mut parser, "ANALYZE");
            parser.parser.next_token();
            AtlasStatement::ExplainImport {
                analyze,
                import: Box::new(parse_import(&mut parser).map_err(sql_error)?),
            }
        } else {
            AtlasStatement::DataFusion(Box::new(
                parser
                    .parse_statement()
                    .map_err(|e| AtlasError::Usage(format!("SQL error: {e}")))?,
            ))
        };
        statements.push(statement);
        let next = parser.parser.peek_token();
        if next != Token::EOF && next != Token::SemiColon {
            return Err(AtlasError::Usage(format!(
                "SQL error: expected ';' or the end of the script, found {next} at {}",
                next.span.start
            )));
        }
    }
    Ok(statements)
}

fn peek_word(parser: &DFParser, word: &str) -> bool {
    matches!(&parser.parser.peek_token().token, Token::Word(w) if w.value.eq_ignore_ascii_case(word))
}

fn peek_nth_word(parser: &DFParser, n: usize, word: &str) -> bool {
    matches!(&parser.parser.peek_nth_token(n).token, Token::Word(w) if w.value.eq_ignore_ascii_case(word))
}

/// Consumes the next token if it is the word `word` (keyword or not).
fn parse_word(parser: &mut DFParser, word: &str) -> bool {
    if peek_word(parser, word) {
        parser.parser.next_token();
        true
    } else {
        false
    }
}

fn expect_word(parser: &mut DFParser, word: &str) -> std::result::Result<(), ParserError> {
    if parse_word(parser, word) {
        Ok(())
    } else {
        parser.parser.expected(word, parser.parser.peek_token())
    }
}

fn parse_identifier_list(parser: &mut DFParser) -> std::result::Result<Vec<String>, ParserError> {
    parser.parser.expect_token(&Token::LParen)?;
    let mut names = Vec::new();
    loop {
        names.push(parser.parser.parse_identifier()?.value);
        if !parser.parser.consume_token(&Token::Comma) {
            break;
        }
    }
    parser.parser.expect_token(&Token::RParen)?;
    Ok(names)
}

fn parse_import(parser: &mut DFParser) -> std::result::Result<ImportStatement, ParserError> {
    parser.parser.expect_keyword(Keyword::INTO)?;
    let name_token = parser.parser.peek_token();
    let object = parser.parser.parse_object_name(false)?;
    let parts = object
        .0
        .iter()
        .map(|part| match part.as_ident() {
            Some(ident) if ident.quote_style.is_some() => Ok(Ident::quoted(&ident.value)),
            Some(ident) => Ok(Ident::plain(&ident.value)),
            None => Err(ParserError::ParserError(format!(
                "a table name, not {object}, at {}",
                name_token.span.start
            ))),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let table = TableName::from_parts(parts)
        .map_err(|e| ParserError::ParserError(format!("{e}, at {}", name_token.span.start)))?;
    let mut statement = ImportStatement {
        table,
        columns: Vec::new(),
        source: ImportFrom::default(),
        map: Vec::new(),
        format: None,
        options: Vec::new(),
        key: Vec::new(),
        on_duplicate: OnDuplicate::default(),
        on_duplicate_file: FilePolicy::default(),
        on_bad_value: OnBadValue::default(),
        create_table: CreateTable::default(),
        partitions: None,
        chunk_rows: None,
        strategy: None,
    };
    if parser.parser.peek_token() == Token::LParen {
        statement.columns = parse_identifier_list(parser)?;
    }
    parser.parser.expect_keyword(Keyword::FROM)?;
    statement.source = if parser.parser.consume_token(&Token::LParen) {
        let query = parser.parser.parse_query()?;
        parser.parser.expect_token(&Token::RParen)?;
        ImportFrom::Query(query.to_string())
    } else {
        ImportFrom::Path(parser.parser.parse_literal_string()?)
    };
    loop {
        if parse_word(parser, "FORMAT") {
            statement.format = Some(parser.parser.parse_identifier()?.value);
        } else if parse_word(parser, "OPTIONS") {
            parser.parser.expect_token(&Token::LParen)?;
            loop {
                let name = parser.parser.parse_identifier()?.value.to_ascii_lowercase();
                let value = parser.parser.parse_literal_string()?;
                statement.options.push((name, value));
                if !parser.parser.consume_token(&Token::Comma) {
                    break;
                }
            }
            parser.parser.expect_token(&Token::RParen)?;
        } else if parse_word(parser, "MAP") {
            parser.parser.expect_token(&Token::LParen)?;
            loop {
                let column = parser.parser.parse_identifier()?.value;
                parser.parser.expect_token(&Token::Eq)?;
                let expr = parser.parser.parse_expr()?;
                statement.map.push((column, expr.to_string()));
                if !parser.parser.consume_token(&Token::Comma) {
                    break;
                }
            }
            parser.parser.expect_token(&Token::RParen)?;
        } else if parse_word(parser, "KEY") {
            statement.key = parse_identifier_list(parser)?;
        } else if parse_word(parser, "ON") {
            if parse_word(parser, "BAD") {
                expect_word(parser, "VALUE")?;
                statement.on_bad_value = if parse_word(parser, "ERROR") {
                    OnBadValue::Error
                } else if parse_word(parser, "NULL") {
                    OnBadValue::Null
                } else if parse_word(parser, "REJECT") {
                    expect_word(parser, "TO")?;
                    OnBadValue::Reject(parser.parser.parse_literal_string()?.into())
                } else {
                    return parser.parser.expected(
                        "ERROR, NULL or REJECT TO '<file>'",
                        parser.parser.peek_token(),
                    );
                };
                continue;
            }
            expect_word(parser, "DUPLICATE")?;
            if parse_word(parser, "FILE") {
                statement.on_duplicate_file = if parse_word(parser, "ERROR") {
                    FilePolicy::Error
                } else if parse_word(parser, "SKIP") {
                    FilePolicy::Skip
                } else if parse_word(parser, "ALLOW") {
                    FilePolicy::Allow
                } else {
                    return parser
                        .parser
                        .expected("ERROR, SKIP or ALLOW", parser.parser.peek_token());
                };
            } else if parse_word(parser, "ERROR") {
                statement.on_duplicate = OnDuplicate::Error;
            } else if parse_word(parser, "SKIP") {
                statement.on_duplicate = OnDuplicate::Skip;
            } else if parse_word(parser, "UPDATE") {
                statement.on_duplicate = OnDuplicate::Update;
            } else {
                return parser
                    .parser
                    .expected("ERROR, SKIP, UPDATE or FILE", parser.parser.peek_token());
            }
        } else if parse_word(parser, "CREATE") {
            expect_word(parser, "TABLE")?;
            if parse_word(parser, "NEVER") {
                statement.create_table = CreateTable::Never;
            } else {
                expect_word(parser, "IF")?;
                expect_word(parser, "NOT")?;
                expect_word(parser, "EXISTS")?;
                statement.create_table = CreateTable::IfNotExists;
            }
        } else if parse_word(parser, "WITH") {
            parser.parser.expect_token(&Token::LParen)?;
            loop {
                let name_token = parser.parser.peek_token();
                let name = parser.parser.parse_identifier()?.value.to_ascii_lowercase();
                // `name value` or `name = value`.
                let _ = parser.parser.consume_token(&Token::Eq);
                match name.as_str() {
                    "partitions" => {
                        statement.partitions = Some(parser.parser.parse_literal_uint()? as usize)
                    }
                    "chunk_rows" => {
                        statement.chunk_rows = Some(parser.parser.parse_literal_uint()? as usize)
                    }
                    "strategy" => {
                        let value = parser.parser.parse_literal_string()?;
                        statement.strategy =
                            Some(value.parse().map_err(|e: AtlasError| {
                                ParserError::ParserError(e.to_string())
                            })?);
                    }
                    _ => {
                        return parser
                            .parser
                            .expected("partitions, chunk_rows or strategy", name_token);
                    }
                }
                if !parser.parser.consume_token(&Token::Comma) {
                    break;
                }
            }
            parser.parser.expect_token(&Token::RParen)?;
        } else {
            break;
        }
    }
    let next = parser.parser.peek_token();
    if next != Token::EOF && next != Token::SemiColon {
        return parser.parser.expected(
            "FORMAT, OPTIONS, MAP, KEY, ON DUPLICATE, ON BAD VALUE, CREATE TABLE, WITH or the end of the statement",
            next,
        );
    }
    Ok(statement)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn import(sql: &str) -> ImportStatement {
        match parse_statements(sql).unwrap().remove(0) {
            AtlasStatement::Import(s) => *s,
            other => panic!("not an import: {other:?}"),
        }
    }

    #[test]
    fn parses_every_clause() {
        let s = import(
            "import into contacts (email, name) from 'data/c.csv' format csv \
             options (delimiter ';', header 'true') key (email) on duplicate skip \
             on duplicate file allow create table never with (partitions 2, chunk_rows 500)",
        );
        assert_eq!(s.table, TableName::parse("contacts").unwrap());
        assert_eq!(s.columns, ["email", "name"]);
        assert_eq!(s.source, ImportFrom::Path("data/c.csv".into()));
        assert_eq!(s.format.as_deref(), Some("csv"));
        assert_eq!(s.key, ["email"]);
        assert_eq!(s.on_duplicate, OnDuplicate::Skip);
        assert_eq!(s.on_duplicate_file, FilePolicy::Allow);
        assert_eq!(s.create_table, CreateTable::Never);
        assert_eq!((s.partitions, s.chunk_rows), (Some(2), Some(500)));
        let with = import("IMPORT INTO t FROM 'a.csv' WITH (strategy = 'probe', partitions = 3)");
        assert_eq!(
            (with.strategy, with.partitions),
            (Some(KeyStrategy::Probe), Some(3))
        );
        assert_eq!(
            s.source_options().unwrap().format,
            Some(crate::source::SourceFormat::Csv(
                crate::source::CsvDialect {
                    delimiter: b';',
                    detect_delimiter: false,
                    ..Default::default()
                }
            ))
        );
        let s = import(
            r"import into t from 'c.csv.gz' options (quote '|', escape '\', null 'NULL',
              comment '#', infer 'text', compression 'gzip')",
        );
        let options = s.source_options().unwrap();
        assert_eq!(
            options.format,
            Some(crate::source::SourceFormat::Csv(
                crate::source::CsvDialect {
                    quote: Some(b'|'),
                    escape: Some(b'\\'),
                    comment: Some(b'#'),
                    null: Some("NULL".into()),
                    ..Default::default()
                }
            ))
        );
        assert_eq!(options.compression, Some(crate::source::Compression::Gzip));
        assert_eq!(options.infer, Some(crate::options::Inference::Text));
    }

    #[test]
    fn a_statement_becomes_import_options_defaults_where_silent() {
        let options = import(
            "IMPORT INTO t (a, b) FROM 'a.csv' KEY (a) ON DUPLICATE SKIP \
             ON BAD VALUE NULL WITH (partitions 2)",
        )
        .import_options()
        .unwrap();
        let defaults = ImportOptions::default();
        assert_eq!(options.columns, ["a", "b"]);
        assert_eq!(options.key, Some(vec!["a".to_string()]));
        assert_eq!(
            (
                options.on_duplicate,
                &options.on_bad_value,
                options.partitions
            ),
            (OnDuplicate::Skip, &OnBadValue::Null, 2)
        );
        assert_eq!(
            (options.chunk_rows, options.strategy, options.file_policy),
            (defaults.chunk_rows, defaults.strategy, defaults.file_policy)
        );
        let everything = import("IMPORT INTO t FROM 'a.csv'")
            .import_options()
            .unwrap();
        assert_eq!(everything.key, None, "no KEY: every written column");
    }

    #[test]
    fn schema_qualified_and_quoted_targets() {
        let s = import("IMPORT INTO analytics.c2 FROM 'a.csv'");
        assert_eq!(s.table, TableName::parse("analytics.c2").unwrap());
        let s = import("IMPORT INTO \"Sales\".\"my.table\" FROM 'a.csv'");
        assert_eq!(s.table.schema, Some(Ident::quoted("Sales")));
        assert_eq!(s.table.table, Ident::quoted("my.table"));
        let err = parse_statements("IMPORT INTO a.b.c FROM 'a.csv'")
            .unwrap_err()
            .to_string();
        assert!(err.contains("one or two parts"), "{err}");
    }

    #[test]
    fn map_and_query_sources() {
        let s = import(
            "IMPORT INTO people FROM (SELECT a.id, b.name FROM a JOIN b ON a.id = b.id WHERE a.x > 1) \
             MAP (email = lower(trim(\"E-mail\")), joined = to_date(\"Joined\", '%m/%d/%Y')) KEY (id)",
        );
        let ImportFrom::Query(query) = &s.source else {
            panic!("expected a query source");
        };
        assert!(
            query.starts_with("SELECT a.id, b.name FROM a JOIN b"),
            "{query}"
        );
        assert_eq!(
            s.map,
            [
                ("email".to_string(), "lower(TRIM(\"E-mail\"))".to_string()),
                (
                    "joined".to_string(),
                    "to_date(\"Joined\", '%m/%d/%Y')".to_string()
                )
            ]
        );
        assert_eq!(s.key, ["id"]);
    }

    #[test]
    fn other_statements_fall_through_to_datafusion() {
        let statements = parse_statements(
            "SET datafusion.execution.batch_size = 100; \
             IMPORT INTO t FROM 'a.parquet'; SELECT 1;",
        )
        .unwrap();
        assert_eq!(statements.len(), 3);
        let more = parse_statements(
            "CHECK IMPORT INTO t FROM 'a.csv'; EXPLAIN IMPORT INTO t FROM 'a.csv'; \
             EXPLAIN ANALYZE IMPORT INTO t FROM 'a.csv'; EXPLAIN SELECT 1",
        )
        .unwrap();
        assert!(matches!(more[0], AtlasStatement::CheckImport(_)));
        assert!(matches!(
            more[1],
            AtlasStatement::ExplainImport { analyze: false, .. }
        ));
        assert!(matches!(
            more[2],
            AtlasStatement::ExplainImport { analyze: true, .. }
        ));
        assert!(matches!(more[3], AtlasStatement::DataFusion(_)));
        assert!(matches!(statements[0], AtlasStatement::DataFusion(_)));
        assert!(matches!(statements[1], AtlasStatement::Import(_)));
        assert!(matches!(statements[2], AtlasStatement::DataFusion(_)));
    }

    #[test]
    fn errors_say_where_and_what() {
        let err = parse_statements("IMPORT INTO t\nFROM 'a.csv' ON DUPLICATE MAYBE")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ERROR, SKIP, UPDATE or FILE"), "{err}");
        assert!(err.contains("Line: 2"), "{err}");
        let err = parse_statements("IMPORT INTO t FROM 'a.csv' WITH (speed 3)")
            .unwrap_err()
            .to_string();
        assert!(err.contains("partitions, chunk_rows or strategy"), "{err}");
        let err = parse_statements("IMPORT t FROM 'a.csv'")
            .unwrap_err()
            .to_string();
        assert!(err.contains("INTO"), "{err}");
    }
}
