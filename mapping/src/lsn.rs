//! PostgreSQL log sequence numbers. PostgreSQL prints an LSN as two hexadecimal halves
//! (`16/B374D848`, what `pg_current_wal_lsn()` returns); Debezium sends it as a 64-bit number
//! (`source.lsn`, and `pg_lsn` columns). The watermark's position is kept as the number and
//! shown and accepted in PostgreSQL's form.

use std::fmt;
use std::str::FromStr;

/// A log sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

/// Text that is not an LSN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a PostgreSQL LSN (expected two hexadecimal numbers like `16/B374D848`, or a decimal number)")]
pub struct BadLsn(pub String);

impl FromStr for Lsn {
    type Err = BadLsn;

    /// `HI/LO` in hexadecimal, or the plain decimal number.
    fn from_str(s: &str) -> Result<Lsn, BadLsn> {
        let bad = || BadLsn(s.to_owned());
        let s = s.trim();
        match s.split_once('/') {
            Some((hi, lo)) => {
                let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
                let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
                Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
            }
            None => s.parse().map(Lsn).map_err(|_| bad()),
        }
    }
}

impl fmt::Display for Lsn {
    /// PostgreSQL's form: `16/B374D848`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_postgres_text() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn.0, (0x16 << 32) | 0xB374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!("0/0".parse::<Lsn>().unwrap(), Lsn(0));
        assert_eq!("12345".parse::<Lsn>().unwrap(), Lsn(12345));
        assert!("x/1".parse::<Lsn>().is_err());
        assert!("".parse::<Lsn>().is_err());
        assert!("0/1/2".parse::<Lsn>().is_err());
    }
}
