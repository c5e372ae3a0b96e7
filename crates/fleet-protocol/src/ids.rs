//! Newtypes for the numeric identifiers the manager hands out.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = std::num::ParseIntError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map(Self)
            }
        }
    };
}

id_type!(
    /// A render job: one task spec, one or more frames.
    JobId
);
id_type!(
    /// An agent that joined the manager.
    AgentId
);
id_type!(
    /// A range of samples of one frame.
    ChunkId
);
id_type!(
    /// One agent's time-limited claim on one chunk.
    LeaseId
);
