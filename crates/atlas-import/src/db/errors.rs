//! What a database's error says, as an import reports it: whether the
//! database refused rows for keys its unique indexes hold (the import's own
//! duplicate check may explain them), which row of the write it refused, and
//! its message without the driver's wrapping.

use crate::error::AtlasError;

/// Whether `error` is the database refusing rows for a key one of its
/// unique indexes (or its primary key) already holds, from the table or
/// from the same write.
pub(crate) fn refused_as_duplicate(error: &AtlasError) -> bool {
    let AtlasError::Database { source, .. } = error else {
        return false;
    };
    let source: &(dyn std::error::Error + 'static) = source.as_ref();
    if let Some(e) = source.downcast_ref::<sqlx::Error>() {
        return e
            .as_database_error()
            .is_some_and(|e| e.kind() == sqlx::error::ErrorKind::UniqueViolation);
    }
    super::sqlite::refused_as_duplicate(source) || super::mysql::refused_as_duplicate(source)
}

/// The row of the write (1-based, as the database counts the rows of its
/// statements) that the database refused, where its error says which:
/// PostgreSQL's COPY names a row refused as a whole (a check, foreign-key or
/// NOT NULL constraint, a trigger) in the error's context (`COPY t, line 3`,
/// the last line of a context that runs through functions); MySQL and
/// MariaDB name the row of a statement whose value they refused (`... at
/// row 3`), which the write counts on from its earlier statements; SQLite's
/// write steps one row at a time and knows it.
pub(crate) fn refused_row(source: &(dyn std::error::Error + 'static)) -> Option<u64> {
    let Some(sqlx::Error::Database(e)) = source.downcast_ref::<sqlx::Error>() else {
        return super::mysql::refused_row(source).or_else(|| super::sqlite::refused_row(source));
    };
    let context = e
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()?
        .r#where()?;
    let copy = context
        .lines()
        .rev()
        .find(|line| line.starts_with("COPY "))?;
    let (_, rest) = copy.split_once(", line ")?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The message of a database's error: PostgreSQL's with its detail and hint
/// (which name the key and the row) and without the line of the server's
/// source that raised it (which sqlx appends, and which reads as a line of
/// the file); any other driver's as it says it.
pub(crate) fn database_message(source: &(dyn std::error::Error + 'static)) -> String {
    let Some(sqlx::Error::Database(e)) = source.downcast_ref::<sqlx::Error>() else {
        return source.to_string();
    };
    let Some(pg) = e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() else {
        return e.message().to_string();
    };
    let mut message = pg.message().to_string();
    for (label, text) in [("", pg.detail()), ("hint: ", pg.hint())] {
        if let Some(text) = text {
            message.push_str(&format!(" ({label}{text})"));
        }
    }
    message
}
