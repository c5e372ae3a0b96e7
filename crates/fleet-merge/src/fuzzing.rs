//! Property checks on hostile partials, shared by the `partial_exr` fuzz
//! target in `tests/fuzz` and the corpus replay test
//! (`tests/fuzz_corpus.rs`), which runs them over every committed corpus
//! file on stable Rust; and the generator of the seed partials.
//!
//! [`check_partial`] writes the input to a file in a temporary directory
//! (kept for the whole process, with the accumulators it uses) and panics
//! when a property is violated. Setting `TMPDIR` to a RAM disk makes it
//! faster: folds sync their files.

use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use exr::prelude::{
    f16, AnyChannel, AnyChannels, AttributeValue, Blocks, Compression, Encoding, FlatSamples,
    Image, ImageAttributes, Layer, LayerAttributes, LineOrder, SampleType, SmallVec, Text, Vec2,
    WritableImage,
};

use crate::compare::read_planes;
use crate::{
    read_layout, validate_partial, Accumulator, ChunkInfo, FoldOutcome, Layout, MergeRule,
};

/// Width of the generated partials.
pub const WIDTH: usize = 8;
/// Height of the generated partials.
pub const HEIGHT: usize = 6;

/// Channels of a partial holding only the Combined pass.
pub const COMBINED: &[&str] = &[
    "ViewLayer.Combined.A",
    "ViewLayer.Combined.B",
    "ViewLayer.Combined.G",
    "ViewLayer.Combined.R",
];

/// Channels of a partial with a pass of every merge rule, sorted as OpenEXR
/// stores them.
pub const PASSES: &[&str] = &[
    "ViewLayer.Combined.A",
    "ViewLayer.Combined.B",
    "ViewLayer.Combined.G",
    "ViewLayer.Combined.R",
    "ViewLayer.CryptoObject00.r",
    "ViewLayer.Depth.Z",
    "ViewLayer.DiffCol.B",
    "ViewLayer.DiffCol.G",
    "ViewLayer.DiffCol.R",
    "ViewLayer.DiffDir.B",
    "ViewLayer.DiffDir.G",
    "ViewLayer.DiffDir.R",
    "ViewLayer.IndexOB.X",
];

/// How a generated partial is written.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Channel names.
    pub channels: &'static [&'static str],
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Compression of the pixel blocks.
    pub compression: Compression,
    /// Type of every channel's samples.
    pub sample_type: SampleType,
    /// Tiles (8×8) instead of scanlines.
    pub tiled: bool,
    /// Written as two parts (the second one a copy of the first).
    pub two_parts: bool,
}

impl Shape {
    /// A Blender-like 8×6 partial with `channels`, ZIP-compressed.
    pub fn new(channels: &'static [&'static str]) -> Self {
        Self {
            channels,
            width: WIDTH,
            height: HEIGHT,
            compression: Compression::ZIP16,
            sample_type: SampleType::F32,
            tiled: false,
            two_parts: false,
        }
    }

    /// The same, with another compression.
    pub fn compressed(self, compression: Compression) -> Self {
        Self {
            compression,
            ..self
        }
    }
}

/// Plausible values: smooth colours, Depth with a 1e10 background,
/// integral object indices.
fn value(channel: &str, x: usize, y: usize) -> f32 {
    let (fx, fy) = (x as f32, y as f32);
    let component = channel.bytes().last().map_or(0.0, |b| f32::from(b % 7));
    if channel.contains(".Depth.") {
        return if x + y < 6 { 2.5 + 0.25 * fx } else { 1.0e10 };
    }
    if channel.contains(".IndexOB.") {
        return ((x / 3) + 2 * (y / 2)) as f32;
    }
    if channel.ends_with(".A") {
        return 1.0;
    }
    0.05 * fx + 0.02 * fy + 0.1 * component
}

fn layer(shape: &Shape) -> Layer<AnyChannels<FlatSamples>> {
    let channels: SmallVec<[AnyChannel<FlatSamples>; 4]> = shape
        .channels
        .iter()
        .map(|&name| {
            let values = (0..shape.width * shape.height)
                .map(|i| value(name, i % shape.width, i / shape.width));
            let samples = match shape.sample_type {
                SampleType::F16 => FlatSamples::F16(values.map(f16::from_f32).collect()),
                SampleType::U32 => FlatSamples::U32(values.map(|v| v as u32).collect()),
                SampleType::F32 => FlatSamples::F32(values.collect()),
            };
            AnyChannel::new(name, samples)
        })
        .collect();
    let mut attributes = LayerAttributes::default();
    for (name, text) in [
        ("BlenderMultiChannel", "Blender V2.55.1 and newer"),
        ("cycles.ViewLayer.samples", "16"),
        ("cycles.ViewLayer.render_time", "00:00.42"),
        ("Time", "00:00:00:01"),
    ] {
        attributes
            .other
            .insert(Text::from(name), AttributeValue::Text(Text::from(text)));
    }
    let encoding = Encoding {
        compression: shape.compression,
        blocks: if shape.tiled {
            Blocks::Tiles(Vec2(8, 8))
        } else {
            Blocks::ScanLines
        },
        line_order: LineOrder::Increasing,
    };
    Layer::new(
        (shape.width, shape.height),
        attributes,
        encoding,
        AnyChannels::sort(channels),
    )
}

/// The bytes of a generated partial.
pub fn partial_bytes(shape: &Shape) -> Vec<u8> {
    let mut bytes = Vec::new();
    let written = if shape.two_parts {
        let mut second = layer(shape);
        second.attributes.layer_name = Some(Text::from("second"));
        let mut first = layer(shape);
        first.attributes.layer_name = Some(Text::from("first"));
        Image::from_layers(
            ImageAttributes::with_size((shape.width, shape.height)),
            vec![first, second],
        )
        .write()
        .to_buffered(Cursor::new(&mut bytes))
    } else {
        Image::from_layer(layer(shape))
            .write()
            .to_buffered(Cursor::new(&mut bytes))
    };
    written.expect("the exr crate writes a generated partial");
    bytes
}

/// Where the offset table of a single-part scanline file with `blocks`
/// pixel blocks starts: the first entry points just past the table.
fn offset_table(bytes: &[u8], blocks: usize) -> usize {
    let u64_at = |at: usize| {
        bytes
            .get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    (8..bytes.len())
        .find(|&at| u64_at(at) == Some((at + 8 * blocks) as u64))
        .expect("a generated partial has an offset table")
}

/// Seed partials for the fuzz corpus, named for what they are: valid
/// Blender-like partials in several compressions, and partials that are
/// truncated, damaged or of a kind that cannot be merged.
pub fn seed_partials() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    let passes = Shape::new(PASSES);
    for (name, shape) in [
        ("valid_combined_zip", Shape::new(COMBINED)),
        (
            "valid_combined_none",
            Shape::new(COMBINED).compressed(Compression::Uncompressed),
        ),
        ("valid_passes_zip", passes),
        ("valid_passes_zip1", passes.compressed(Compression::ZIP1)),
        (
            "valid_passes_none",
            passes.compressed(Compression::Uncompressed),
        ),
        ("valid_passes_rle", passes.compressed(Compression::RLE)),
        ("valid_passes_piz", passes.compressed(Compression::PIZ)),
        (
            "valid_plain_rgba_zip",
            Shape::new(&["A", "B", "G", "R"]).compressed(Compression::ZIP16),
        ),
        (
            "mismatch_size_zip",
            Shape {
                width: 9,
                height: 5,
                ..passes
            },
        ),
        (
            "mismatch_extra_channel",
            Shape::new(&[
                "ViewLayer.Combined.A",
                "ViewLayer.Combined.B",
                "ViewLayer.Combined.G",
                "ViewLayer.Combined.R",
                "ViewLayer.Emit.R",
            ]),
        ),
        (
            "unsupported_f16",
            Shape {
                sample_type: SampleType::F16,
                ..Shape::new(COMBINED)
            },
        ),
        (
            "unsupported_tiled",
            Shape {
                tiled: true,
                ..Shape::new(COMBINED)
            },
        ),
        (
            "unsupported_two_parts",
            Shape {
                two_parts: true,
                ..Shape::new(COMBINED)
            },
        ),
    ] {
        seeds.push((format!("{name}.exr"), partial_bytes(&shape)));
    }

    // Damaged copies of a partial with one ZIP block and of one with six
    // uncompressed blocks.
    for (stem, shape, blocks) in [
        ("passes_zip", passes, 1),
        (
            "passes_none",
            passes.compressed(Compression::Uncompressed),
            HEIGHT,
        ),
    ] {
        let good = partial_bytes(&shape);
        let table = offset_table(&good, blocks);
        let first_block = usize::try_from(u64::from_le_bytes(
            good[table..table + 8].try_into().expect("8 bytes"),
        ))
        .expect("small offset");
        let mut damaged = |what: &str, change: &dyn Fn(&mut Vec<u8>)| {
            let mut bytes = good.clone();
            change(&mut bytes);
            seeds.push((format!("bad_{stem}_{what}.exr"), bytes));
        };
        damaged("truncated_half", &|b| b.truncate(b.len() / 2));
        damaged("truncated_last_byte", &|b| b.truncate(b.len() - 1));
        damaged("truncated_in_table", &|b| b.truncate(table + 4));
        damaged("header_only", &|b| b.truncate(table));
        damaged("magic", &|b| b[0] = b'x');
        damaged("table_zeroed", &|b| {
            b[table..table + 8 * blocks].fill(0);
        });
        damaged("table_into_header", &|b| {
            b[table..table + 8].copy_from_slice(&8_u64.to_le_bytes());
        });
        damaged("table_past_end", &|b| {
            b[table..table + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        });
        damaged("block_line", &|b| {
            b[first_block..first_block + 4].copy_from_slice(&7_i32.to_le_bytes());
        });
        damaged("block_size_negative", &|b| {
            b[first_block + 4..first_block + 8].copy_from_slice(&(-5_i32).to_le_bytes());
        });
        damaged("block_size_huge", &|b| {
            b[first_block + 4..first_block + 8].copy_from_slice(&i32::MAX.to_le_bytes());
        });
        damaged("pixels_flipped", &|b| {
            let start = first_block + 8;
            for byte in &mut b[start..start + 16] {
                *byte ^= 0x5a;
            }
        });
        damaged("chunk_count", &|b| {
            // A header claiming another size than its data window.
            if let Some(at) = find(b, b"dataWindow\0box2i\0") {
                let max_y = at + 17 + 4 + 12;
                b[max_y..max_y + 4].copy_from_slice(&1000_i32.to_le_bytes());
            }
        });
    }
    seeds.push(("bad_empty.exr".to_owned(), Vec::new()));
    seeds.push((
        "bad_magic_only.exr".to_owned(),
        vec![0x76, 0x2f, 0x31, 0x01],
    ));
    seeds
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Frames with more values than this are not merged in full by
/// [`check_partial`] (only validated), to keep iterations fast.
const OWN_FRAME_VALUES: u64 = 1 << 16;

/// Folds kept in a reference accumulator before it is started over.
const MAX_FOLDS: usize = 16;

/// A frame to fold inputs into: an accumulator that already holds one
/// valid partial.
struct Reference {
    name: &'static str,
    shape: Shape,
    layout: Layout,
    generation: u32,
    acc: Option<Accumulator>,
    next_id: i64,
}

struct Harness {
    dir: tempfile::TempDir,
    input: PathBuf,
    references: Vec<Reference>,
}

static HARNESS: Mutex<Option<Harness>> = Mutex::new(None);

/// Runs every check on `data` as a partial:
///
/// - [`read_layout`] and [`validate_partial`] return an error or a layout,
///   never panic, and their errors are bad input
///   ([`crate::MergeError::is_bad_input`]);
/// - folding it as a new chunk into an accumulator of a reference frame
///   (the generated frame with the input's channels, or [`PASSES`])
///   succeeds exactly when [`validate_partial`] accepts it against that
///   frame; a refused fold returns a bad-input error and changes nothing
///   (folded chunks, samples and every running sum stay as they were);
/// - a partial that passes [`validate_partial`] against its own layout can
///   start a frame: an accumulator created from its layout folds it, writes
///   a PNG preview (when there is a Combined pass) and a merged EXR that is
///   itself a valid partial of the frame, with the same values in every
///   channel that merges as a mean, a minimum or from sample 0.
pub fn check_partial(data: &[u8]) {
    let mut guard = HARNESS.lock().unwrap_or_else(|poisoned| {
        // A check panicked while it held the harness: start over.
        HARNESS.clear_poison();
        let mut guard = poisoned.into_inner();
        *guard = None;
        guard
    });
    guard.get_or_insert_with(Harness::new).check(data);
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("fleet-merge-fuzz-")
            .tempdir()
            .expect("a temporary directory");
        let input = dir.path().join("input.exr");
        let references = [
            ("passes", Shape::new(PASSES)),
            ("combined", Shape::new(COMBINED)),
        ]
        .into_iter()
        .map(|(name, shape)| {
            let path = dir.path().join("reference.exr");
            fs::write(&path, partial_bytes(&shape)).expect("write a reference partial");
            let layout = read_layout(&path).expect("a generated partial has a layout");
            Reference {
                name,
                shape,
                layout,
                generation: 0,
                acc: None,
                next_id: 0,
            }
        })
        .collect();
        Self {
            dir,
            input,
            references,
        }
    }

    fn check(&mut self, data: &[u8]) {
        fs::write(&self.input, data).expect("write the input");
        let own = read_layout(&self.input);
        if let Err(e) = &own {
            assert!(e.is_bad_input(), "read_layout: not a bad-input error: {e}");
        }
        let index = own
            .as_ref()
            .ok()
            .and_then(|own| {
                self.references
                    .iter()
                    .position(|r| r.layout.channels == own.channels)
            })
            .unwrap_or(0);
        let dir = self.dir.path().to_path_buf();
        self.references[index].check_fold(&dir, &self.input);
        if let Ok(layout) = own {
            check_own_frame(&dir.join("own"), &self.input, &layout);
        }
    }
}

impl Reference {
    /// The accumulator, (re)created with the reference partial folded.
    fn accumulator(&mut self, dir: &Path) -> &mut Accumulator {
        let full = self
            .acc
            .as_ref()
            .is_some_and(|acc| acc.folded_chunks().len() >= MAX_FOLDS || acc.sums().is_err());
        if full {
            if let Some(acc) = self.acc.take() {
                acc.discard().expect("discard a reference accumulator");
            }
            self.generation += 1;
        }
        self.acc.get_or_insert_with(|| {
            let acc_dir = dir.join(format!("{}-{}", self.name, self.generation));
            let partial = dir.join("reference.exr");
            fs::write(&partial, partial_bytes(&self.shape)).expect("write a reference partial");
            let mut acc = Accumulator::create(&acc_dir, &self.layout)
                .expect("create a reference accumulator");
            let chunk = ChunkInfo {
                id: 0,
                samples: 5,
                holds_sample_zero: true,
            };
            acc.fold(&partial, chunk)
                .expect("fold the reference partial");
            self.next_id = 1;
            acc
        })
    }

    fn check_fold(&mut self, dir: &Path, input: &Path) {
        let valid = validate_partial(input, &self.layout);
        if let Err(e) = &valid {
            assert!(
                e.is_bad_input(),
                "validate_partial: not a bad-input error: {e}"
            );
        }
        self.accumulator(dir);
        let id = self.next_id;
        self.next_id += 1;
        let acc = self.acc.as_mut().expect("the reference accumulator exists");
        let chunks = acc.folded_chunks();
        let samples = acc.total_samples();
        let sums: Vec<u64> = acc
            .sums()
            .expect("the reference accumulator has sums")
            .iter()
            .map(|s| s.to_bits())
            .collect();
        let chunk = ChunkInfo {
            id,
            samples: 3,
            holds_sample_zero: false,
        };
        match acc.fold(input, chunk) {
            Ok(FoldOutcome::Folded) => {
                if let Err(e) = valid {
                    panic!("fold accepted a partial that validate_partial refused: {e}");
                }
                assert_eq!(acc.total_samples(), samples + 3, "samples after a fold");
                let mut expected = chunks;
                expected.push(id);
                assert_eq!(acc.folded_chunks(), expected, "chunks after a fold");
            }
            Ok(FoldOutcome::AlreadyFolded) => panic!("a new chunk id {id} was already folded"),
            Err(e) => {
                assert!(
                    valid.is_err(),
                    "fold refused a partial that validate_partial accepted: {e}"
                );
                assert!(e.is_bad_input(), "fold: not a bad-input error: {e}");
                assert_eq!(
                    acc.total_samples(),
                    samples,
                    "a refused fold changed the samples"
                );
                assert_eq!(
                    acc.folded_chunks(),
                    chunks,
                    "a refused fold changed the chunks"
                );
                let after = acc
                    .sums()
                    .unwrap_or_else(|e| panic!("a refused fold lost the sums: {e}"));
                assert!(
                    after.iter().map(|s| s.to_bits()).eq(sums),
                    "a refused fold changed the running sums"
                );
            }
        }
    }
}

/// Starts a frame from a partial that validates against its own layout, and
/// checks the merged result against it.
fn check_own_frame(dir: &Path, input: &Path, layout: &Layout) {
    if let Err(e) = validate_partial(input, layout) {
        assert!(
            e.is_bad_input(),
            "validate_partial against its own layout: not a bad-input error: {e}"
        );
        return;
    }
    let values = u64::from(layout.width) * u64::from(layout.height) * layout.channels.len() as u64;
    if values > OWN_FRAME_VALUES {
        return;
    }
    let _ = fs::remove_dir_all(dir);
    let mut acc = Accumulator::create(&dir.join("acc"), layout)
        .unwrap_or_else(|e| panic!("a valid partial cannot start a frame: {e}"));
    let chunk = ChunkInfo {
        id: 1,
        samples: 2,
        holds_sample_zero: true,
    };
    match acc.fold(input, chunk) {
        Ok(FoldOutcome::Folded) => {}
        other => panic!("a valid partial does not fold into its own frame: {other:?}"),
    }
    let png = acc.write_png(&dir.join("preview.png"), Some(4));
    if layout.combined_channels().is_some() {
        png.unwrap_or_else(|e| panic!("the preview of a valid partial cannot be written: {e}"));
    }
    let merged = dir.join("merged.exr");
    acc.write_exr(&merged)
        .unwrap_or_else(|e| panic!("the merge of a valid partial cannot be written: {e}"));
    let merged_layout =
        read_layout(&merged).unwrap_or_else(|e| panic!("the merged frame has no layout: {e}"));
    assert_eq!(
        (merged_layout.width, merged_layout.height),
        (layout.width, layout.height),
        "the merged frame has another size"
    );
    assert_eq!(
        merged_layout.channels, layout.channels,
        "the merged frame has other channels"
    );
    validate_partial(&merged, layout)
        .unwrap_or_else(|e| panic!("the merged frame is not a valid partial of its frame: {e}"));
    let before = read_planes(input).expect("a validated partial decodes");
    let after = read_planes(&merged).expect("the merged frame decodes");
    for (c, channel) in layout.channels.iter().enumerate() {
        if matches!(channel.rule, MergeRule::LightOverColor { .. }) {
            continue;
        }
        let same = before.planes[c]
            .iter()
            .zip(&after.planes[c])
            .all(|(a, b)| a == b || (a.is_nan() && b.is_nan()));
        assert!(
            same,
            "channel `{}` changed in the merge of a single partial",
            channel.name
        );
    }
    acc.discard().expect("discard the frame");
}
