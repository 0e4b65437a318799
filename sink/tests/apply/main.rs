//! The apply stage against a real Redis (`REDIS_URL`): both writers, change by change and
//! batch by batch, and against each other on generated inputs. One test binary (each links
//! rdkafka, Avro and Redis); the modules share [`support`]'s fixture, whose random key
//! prefixes let their tests run in parallel on one database.

mod aggregates;
mod batch;
mod chunks;
mod differential;
mod differential_writers;
mod exclusive;
mod filtered;
mod guard;
mod owned;
mod round_trips;
mod search;
mod semantics;
mod support;
