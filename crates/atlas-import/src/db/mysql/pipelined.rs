//! Array binding with requests pipelined: the next `COM_STMT_BULK_EXECUTE`
//! on the wire while the server runs the current one.
//!
//! mysql_async's `exec_batch` builds and sends a request only after the
//! previous one's reply, and the server waits meanwhile (a quarter of its
//! time at 4 MiB requests). Here the writer borrows the server's socket from
//! the connection's [`Relay`] after mysql_async has prepared the statement,
//! and keeps up to [`IN_FLIGHT`] requests sent ahead of their replies:
//!
//! ```text
//!  chunk ──► values (as mysql_async's array binding) ──► request k+1 ──► socket ──► server
//!                                                                       ◄── reply k
//! ```
//!
//! The requests are mysql_common's, built from the same parameter values the
//! unpipelined path binds, so a value goes in the same way by either path.
//! Every reply is read before the socket goes back; a reply that refuses
//! (the server's error, fewer rows, warnings) ends the writes with the same
//! refusal the unpipelined path gives: a request that raised warnings is sent
//! again through mysql_async for their text (the import rolls back anyway).
//! A row longer than the server's `max_allowed_packet` goes, with the rest of
//! the chunk, by `LOAD DATA LOCAL INFILE` where that is allowed (it sends a
//! long row in pieces), and is refused where not.

use std::collections::VecDeque;
use std::io;
use std::ops::Range;

use datafusion::arrow::array::RecordBatch;
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, Value};
use mysql_common::constants::{CapabilityFlags, StmtBulkExecuteFlags};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{
    ComStmtBulkExecuteRequest, CommonOkPacket, ErrPacket, OkPacket, OkPacketDeserializer,
};
use mysql_common::proto::MySerialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::super::ChunkStream;
use super::relay::Relay;
use super::write::{
    RequestLimits, RowTooLarge, WriteRefusal, load_chunk, prepare, prepare_array_insert,
    refuse_warnings, row_values, rows_lost, statement_error,
};
use crate::error::{AtlasError, Result};
use crate::names::TableRef;
use crate::schema::TargetColumn;

/// Requests sent ahead of their replies: one the server runs, one waiting in
/// its socket for when it is done.
const IN_FLIGHT: usize = 2;
/// The longest payload of one protocol packet; a longer one continues in the next.
const MAX_PAYLOAD: usize = 0xFF_FFFF;

/// What happens to a row too long for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LongRows {
    /// Refused (the URL chose array binding).
    Refuse,
    /// Written, with the rest of the chunk, by `LOAD DATA LOCAL INFILE`.
    LoadData,
}

/// Writes the batches of `chunk` into `table` by array binding, requests
/// pipelined on the socket `relay` lends; returns the rows written.
pub(super) async fn bind_array_pipelined(
    conn: &mut Conn,
    relay: &Relay,
    table: &TableRef,
    columns: &[TargetColumn],
    chunk: &mut ChunkStream<'_>,
    max_packet: usize,
    long_rows: LongRows,
) -> Result<u64> {
    let context = || format!("inserting into '{table}'");
    let statement = prepare_array_insert(conn, table, columns).await?;
    let limits = RequestLimits::array_binding(max_packet);
    let mut lent = relay.borrow().await.ok_or_else(|| {
        AtlasError::database(
            context(),
            io::Error::new(io::ErrorKind::BrokenPipe, "the connection ended"),
        )
    })?;
    let mut pipeline = Pipeline::new(statement.id());
    let ended = pipeline.run(lent.stream(), chunk, limits).await;
    let ended = match ended {
        Ok(ended) => ended,
        Err(Failure::Connection(e)) => {
            // Where the protocol stands is unknown: the connection ends (the
            // server rolls back) with the lent socket.
            drop(lent);
            let e = match e.kind() {
                io::ErrorKind::UnexpectedEof => io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ),
                _ => e,
            };
            return Err(AtlasError::database(context(), e));
        }
        Err(Failure::Chunk(e)) => {
            lent.give_back();
            return Err(e);
        }
    };
    lent.give_back();
    let written = pipeline.written;
    match ended {
        Ended::Done => Ok(written),
        Ended::Refused {
            rows_before,
            refusal,
        } => Err(match refusal {
            Refusal::Error(error) => statement_error(context(), rows_before, error),
            Refusal::RowsLost { sent, stored } => rows_lost(context(), rows_before, sent, stored),
            Refusal::Warnings { batch, rows } => {
                // Again through mysql_async, for the warnings' text.
                let rows = row_values(&prepare(&batch)?, rows);
                let sent = conn
                    .exec_batch(&statement, rows.into_iter().map(Params::Positional))
                    .await;
                match sent {
                    Err(e) => statement_error(context(), rows_before, e),
                    Ok(()) => match refuse_warnings(conn, context, rows_before).await {
                        Err(refusal) => refusal,
                        Ok(()) => AtlasError::database(
                            context(),
                            WriteRefusal::unquoted_warnings(rows_before),
                        ),
                    },
                }
            }
        }),
        Ended::LongRow {
            batch,
            row,
            too_large,
        } => match long_rows {
            LongRows::Refuse => Err(too_large.at(context(), written)),
            LongRows::LoadData => {
                let rest = futures::stream::iter([Ok(batch.slice(row, batch.num_rows() - row))]);
                let mut rest: ChunkStream<'_> = Box::pin(rest.chain(chunk));
                Ok(written + load_chunk(conn, table, columns, &mut rest, written).await?)
            }
        },
    }
}

/// How the pipelined writes ended, every reply read.
enum Ended {
    /// The chunk is written.
    Done,
    /// The server refused the request after `rows_before` rows.
    Refused { rows_before: u64, refusal: Refusal },
    /// Row `row` of `batch` is too long for a request; the rows before it
    /// are written.
    LongRow {
        batch: RecordBatch,
        row: usize,
        too_large: RowTooLarge,
    },
}

/// The server's refusal of a request.
enum Refusal {
    Error(mysql_async::Error),
    RowsLost {
        sent: u64,
        stored: u64,
    },
    /// Warnings: the request's rows, to send again for their text.
    Warnings {
        batch: RecordBatch,
        rows: Range<usize>,
    },
}

/// Why the writes stopped early.
enum Failure {
    /// The socket: the connection is lost.
    Connection(io::Error),
    /// The chunk's stream (every reply read: the connection is usable).
    Chunk(AtlasError),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Connection(e)
    }
}

/// A request on the wire: its rows (of a batch, to send again) and how many
/// rows of the write went before it.
struct InFlight {
    batch: RecordBatch,
    rows: Range<usize>,
    rows_before: u64,
}

/// The requests of one chunk and their replies.
struct Pipeline {
    statement_id: u32,
    in_flight: VecDeque<InFlight>,
    /// Rows sent so far.
    sent: u64,
    /// Rows the server confirmed.
    written: u64,
    /// The first refusal; requests after it are read but not counted.
    refused: Option<(u64, Refusal)>,
    packet: Vec<u8>,
    payload: Vec<u8>,
}

impl Pipeline {
    fn new(statement_id: u32) -> Self {
        Self {
            statement_id,
            in_flight: VecDeque::with_capacity(IN_FLIGHT + 1),
            sent: 0,
            written: 0,
            refused: None,
            packet: Vec::new(),
            payload: Vec::new(),
        }
    }

    async fn run(
        &mut self,
        socket: &mut TcpStream,
        chunk: &mut ChunkStream<'_>,
        limits: RequestLimits,
    ) -> std::result::Result<Ended, Failure> {
        let mut long_row = None;
        let mut failure = None;
        'batches: while let Some(batch) = chunk.next().await {
            let prepared = batch.and_then(|batch| Ok((prepare(&batch)?, batch)));
            let (prepared, batch) = match prepared {
                Ok(prepared) => prepared,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            let mut rows = row_values(&prepared, 0..batch.num_rows());
            let mut taken = 0;
            while !rows.is_empty() {
                let request = match limits.split(&mut rows) {
                    Ok(request) => request,
                    Err(too_large) => {
                        long_row = Some(Ended::LongRow {
                            batch,
                            row: taken,
                            too_large,
                        });
                        break 'batches;
                    }
                };
                let range = taken..taken + request.len();
                taken = range.end;
                self.send(socket, request, &batch, range).await?;
                while self.in_flight.len() >= IN_FLIGHT {
                    self.read_reply(socket).await?;
                }
                if self.refused.is_some() {
                    break 'batches;
                }
            }
        }
        while !self.in_flight.is_empty() {
            self.read_reply(socket).await?;
        }
        if let Some((rows_before, refusal)) = self.refused.take() {
            return Ok(Ended::Refused {
                rows_before,
                refusal,
            });
        }
        if let Some(e) = failure {
            return Err(Failure::Chunk(e));
        }
        Ok(long_row.unwrap_or(Ended::Done))
    }

    /// Sends one request of `values`, rows `rows` of `batch`, its parameter
    /// types declared.
    async fn send(
        &mut self,
        socket: &mut TcpStream,
        values: Vec<Vec<Value>>,
        batch: &RecordBatch,
        rows: Range<usize>,
    ) -> io::Result<()> {
        self.payload.clear();
        ComStmtBulkExecuteRequest::new(
            self.statement_id,
            StmtBulkExecuteFlags::SEND_TYPES_TO_SERVER,
            values,
        )
        .map_err(io::Error::other)?
        .serialize(&mut self.payload);
        frame(&self.payload, &mut self.packet);
        socket.write_all(&self.packet).await?;
        let count = rows.len() as u64;
        self.in_flight.push_back(InFlight {
            batch: batch.clone(),
            rows,
            rows_before: self.sent,
        });
        self.sent += count;
        Ok(())
    }

    /// Reads the reply of the oldest request in flight.
    async fn read_reply(&mut self, socket: &mut TcpStream) -> io::Result<()> {
        read_packet(socket, &mut self.payload).await?;
        let reply = parse_reply(&self.payload)?;
        let request = self
            .in_flight
            .pop_front()
            .expect("a reply answers a request in flight");
        if self.refused.is_some() {
            return Ok(());
        }
        let sent = request.rows.len() as u64;
        let refusal = match reply {
            Reply::Error(e) => Some(Refusal::Error(mysql_async::Error::Server(e))),
            Reply::Ok { warnings, .. } if warnings > 0 => Some(Refusal::Warnings {
                batch: request.batch,
                rows: request.rows,
            }),
            // The server counts the changes of the table's triggers too.
            Reply::Ok { affected, .. } if affected < sent => Some(Refusal::RowsLost {
                sent,
                stored: affected,
            }),
            Reply::Ok { .. } => None,
        };
        match refusal {
            Some(refusal) => self.refused = Some((request.rows_before, refusal)),
            None => self.written += sent,
        }
        Ok(())
    }
}

/// `payload` as the protocol's packets into `out`: pieces of at most
/// [`MAX_PAYLOAD`] bytes, each after its length and sequence number (a
/// command's packets count from 0), and an empty one after a full last piece.
fn frame(payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut sequence = 0u8;
    let mut pieces = payload.chunks(MAX_PAYLOAD).peekable();
    let mut last_full = payload.is_empty();
    while let Some(piece) = pieces.next() {
        out.extend_from_slice(&(piece.len() as u32).to_le_bytes()[..3]);
        out.push(sequence);
        out.extend_from_slice(piece);
        sequence = sequence.wrapping_add(1);
        if pieces.peek().is_none() {
            last_full = piece.len() == MAX_PAYLOAD;
        }
    }
    if last_full {
        out.extend_from_slice(&[0, 0, 0, sequence]);
    }
}

/// Reads one packet's payload (joined where it came in pieces) into `payload`.
async fn read_packet(socket: &mut TcpStream, payload: &mut Vec<u8>) -> io::Result<()> {
    payload.clear();
    loop {
        let mut header = [0u8; 4];
        socket.read_exact(&mut header).await?;
        let length = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
        let start = payload.len();
        payload.resize(start + length, 0);
        socket.read_exact(&mut payload[start..]).await?;
        if length < MAX_PAYLOAD {
            return Ok(());
        }
    }
}

/// A reply to a request.
#[derive(Debug)]
enum Reply {
    Ok { affected: u64, warnings: u16 },
    Error(mysql_async::ServerError),
}

/// What the reply of a request says, parsed as mysql_async parses it. The
/// capability that shapes an OK or an error packet here is the 4.1 protocol
/// (status and warnings, the SQL state); mysql_async asks for no progress
/// reports, so none comes before a reply.
fn parse_reply(payload: &[u8]) -> io::Result<Reply> {
    let capabilities = CapabilityFlags::CLIENT_PROTOCOL_41;
    match payload.first() {
        Some(0xFF) => match ParseBuf(payload).parse::<ErrPacket<'_>>(capabilities)? {
            ErrPacket::Error(error) => Ok(Reply::Error(error.into())),
            ErrPacket::Progress(_) => unreachable!("progress reports were not asked for"),
        },
        _ => {
            let ok: OkPacket<'_> = ParseBuf(payload)
                .parse::<OkPacketDeserializer<'_, CommonOkPacket>>(capabilities)?
                .into();
            Ok(Reply::Ok {
                affected: ok.affected_rows(),
                warnings: ok.warnings(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_at_the_longest_payload() {
        let mut out = Vec::new();
        frame(b"abc", &mut out);
        assert_eq!(out, [3, 0, 0, 0, b'a', b'b', b'c']);

        let long = vec![7u8; MAX_PAYLOAD + 2];
        frame(&long, &mut out);
        assert_eq!(&out[..4], &[0xFF, 0xFF, 0xFF, 0]);
        let second = 4 + MAX_PAYLOAD;
        assert_eq!(&out[second..second + 4], &[2, 0, 0, 1]);
        assert_eq!(out.len(), second + 4 + 2);

        // A payload of exactly one full piece ends with an empty packet.
        let full = vec![1u8; MAX_PAYLOAD];
        frame(&full, &mut out);
        assert_eq!(&out[out.len() - 4..], &[0, 0, 0, 1]);
    }

    #[test]
    fn replies_parse() {
        // OK: 300 rows (0xFC + 2 bytes), insert id 1, status 2, 1 warning.
        let ok = [0x00, 0xFC, 0x2C, 0x01, 0x01, 0x02, 0x00, 0x01, 0x00];
        match parse_reply(&ok).unwrap() {
            Reply::Ok { affected, warnings } => assert_eq!((affected, warnings), (300, 1)),
            other => panic!("{other:?}"),
        }
        let mut error = vec![0xFF, 0x26, 0x04, b'#'];
        error.extend_from_slice(b"23000Duplicate entry '1' for key 'k'");
        match parse_reply(&error).unwrap() {
            Reply::Error(e) => {
                assert_eq!((e.code, e.state.as_str()), (1062, "23000"));
                assert_eq!(e.message, "Duplicate entry '1' for key 'k'");
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_reply(&[0x00, 0xFC, 0x01]).is_err());
        assert!(parse_reply(&[]).is_err());
    }
}
