//! Typed values and the archived block that carries records.

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Portable, Serialize};

/// Alignment of every block in a run, and of owned run buffers.
pub const BLOCK_ALIGN: usize = 16;

/// The aligned byte buffer that blocks are serialized into and runs are held in.
pub type Aligned = AlignedVec<BLOCK_ALIGN>;

/// A value type that can travel through spill runs.
///
/// Any type that rkyv can archive, validate and deserialize qualifies; it is implemented
/// automatically. `u64`, `(u64, u32)`, `Vec<u8>`, `String` and `#[derive(Archive, Serialize,
/// Deserialize)]` structs all work.
pub trait Value:
    Archive<
        Archived: Portable
                      + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
                      + Deserialize<Self, HighDeserializer<rancor::Error>>,
    > + for<'a> Serialize<HighSerializer<Aligned, ArenaHandle<'a>, rancor::Error>>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> Value for T where
    T: Archive<
            Archived: Portable
                          + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
                          + Deserialize<T, HighDeserializer<rancor::Error>>,
        > + for<'a> Serialize<HighSerializer<Aligned, ArenaHandle<'a>, rancor::Error>>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// The archived form of a value.
pub type ArchivedValue<V> = <V as Archive>::Archived;

/// Deserializes an archived value into its owned form.
///
/// # Panics
///
/// Never for values that passed validation: deserializing the plain types used as values
/// cannot fail. A custom type whose `Deserialize` can fail will panic here.
pub fn to_owned<V: Value>(archived: &ArchivedValue<V>) -> V {
    rkyv::deserialize::<V, rancor::Error>(archived).expect("deserializing a validated value")
}

/// One block of records, column-wise: `ends[i]` is the end offset of key `i` in `keys` (key
/// `i` starts where key `i - 1` ends), `values[i]` is its value. Archived in place in a run.
#[derive(Archive, Serialize, Deserialize, Debug, Default, Clone, PartialEq)]
pub struct Block<V> {
    /// Cumulative end offsets of the keys in `keys`.
    pub ends: Vec<u32>,
    /// All keys of the block, concatenated.
    pub keys: Vec<u8>,
    /// One value per key.
    pub values: Vec<V>,
}
