//! [`Receipt`]: where a durable bus stored a published message, so that the publisher
//! can withdraw it before anyone consumes it (a job dispatch that was timed out or
//! cancelled must never start later).

use std::fmt;
use std::str::FromStr;

/// Where a durable publish was stored: a stream and a sequence number in it. Its text
/// form (`stream:sequence`) can be stored and parsed back.
///
/// ```
/// use cap_bus::Receipt;
/// let r = Receipt::new("CAP_JOBS", 42);
/// assert_eq!(r.to_string(), "CAP_JOBS:42");
/// assert_eq!("CAP_JOBS:42".parse::<Receipt>().unwrap(), r);
/// assert!("nope".parse::<Receipt>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Receipt {
    stream: String,
    sequence: u64,
}

impl Receipt {
    /// A receipt for message `sequence` of `stream`.
    pub fn new(stream: impl Into<String>, sequence: u64) -> Self {
        Receipt {
            stream: stream.into(),
            sequence,
        }
    }

    /// The stream.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The message's sequence number in the stream.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }
}

impl fmt::Display for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.stream, self.sequence)
    }
}

/// A receipt's text that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a receipt (expected `stream:sequence`)")]
pub struct ParseReceiptError;

impl FromStr for Receipt {
    type Err = ParseReceiptError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (stream, seq) = s.rsplit_once(':').ok_or(ParseReceiptError)?;
        if stream.is_empty() {
            return Err(ParseReceiptError);
        }
        let sequence = seq.parse().map_err(|_| ParseReceiptError)?;
        Ok(Receipt::new(stream, sequence))
    }
}
