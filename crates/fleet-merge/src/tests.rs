//! Unit tests on small synthetic partials written with the `exr` crate.

use std::path::{Path, PathBuf};

use exr::prelude::*;

use crate::accumulator::Crash;
use crate::compare::read_planes;
use crate::{
    read_layout, validate_partial, Accumulator, ChunkInfo, FoldOutcome, MergeError, MergeRule,
};

const W: usize = 7;
const H: usize = 37; // more than two 16-line ZIP blocks, the last one short

/// How a synthetic partial is written.
struct Spec<'a> {
    names: &'a [&'a str],
    width: usize,
    height: usize,
    compression: Compression,
    sample_type: SampleType,
    tiled: bool,
}

impl<'a> Spec<'a> {
    fn new(names: &'a [&'a str]) -> Self {
        Self {
            names,
            width: W,
            height: H,
            compression: Compression::ZIP16,
            sample_type: SampleType::F32,
            tiled: false,
        }
    }
}

fn layer_of(
    spec: &Spec<'_>,
    value: &dyn Fn(&str, usize, usize) -> f32,
) -> Layer<AnyChannels<FlatSamples>> {
    let channels: SmallVec<[AnyChannel<FlatSamples>; 4]> = spec
        .names
        .iter()
        .map(|&name| {
            let values =
                (0..spec.width * spec.height).map(|i| value(name, i % spec.width, i / spec.width));
            let samples = match spec.sample_type {
                SampleType::F16 => FlatSamples::F16(values.map(f16::from_f32).collect()),
                SampleType::U32 => FlatSamples::U32(values.map(|v| v as u32).collect()),
                SampleType::F32 => FlatSamples::F32(values.collect()),
            };
            AnyChannel::new(name, samples)
        })
        .collect();
    let mut attributes = LayerAttributes::default();
    attributes.other.insert(
        Text::from("BlenderMultiChannel"),
        AttributeValue::Text(Text::from("Blender V2.55.1 and newer")),
    );
    attributes.other.insert(
        Text::from("cycles.ViewLayer.samples"),
        AttributeValue::Text(Text::from("999")),
    );
    let encoding = Encoding {
        compression: spec.compression,
        blocks: if spec.tiled {
            Blocks::Tiles(Vec2(8, 8))
        } else {
            Blocks::ScanLines
        },
        line_order: LineOrder::Increasing,
    };
    Layer::new(
        (spec.width, spec.height),
        attributes,
        encoding,
        AnyChannels::sort(channels),
    )
}

fn write_spec(path: &Path, spec: &Spec<'_>, value: impl Fn(&str, usize, usize) -> f32) {
    let image = Image::from_layer(layer_of(spec, &value));
    image
        .write()
        .to_file(path)
        .expect("write synthetic partial");
}

fn write_partial(path: &Path, names: &[&str], value: impl Fn(&str, usize, usize) -> f32) {
    write_spec(path, &Spec::new(names), value);
}

/// Reads one channel of an EXR as a plane.
fn plane(path: &Path, name: &str) -> Vec<f32> {
    let planes = read_planes(path).expect("read planes");
    let i = planes
        .names
        .iter()
        .position(|n| n == name)
        .expect("channel present");
    planes.planes[i].clone()
}

fn chunk(id: i64, samples: u32, zero: bool) -> ChunkInfo {
    ChunkInfo {
        id,
        samples,
        holds_sample_zero: zero,
    }
}

/// Writes partials, folds them in the given order, writes the merged EXR.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn merge(&self, parts: &[(PathBuf, ChunkInfo)]) -> PathBuf {
        let out = self.path("merged.exr");
        let _ = std::fs::remove_dir_all(self.path("acc"));
        let layout = read_layout(&parts[0].0).expect("layout");
        let mut acc = Accumulator::create(&self.path("acc"), &layout).expect("create");
        for (p, c) in parts {
            assert_eq!(acc.fold(p, *c).expect("fold"), FoldOutcome::Folded);
        }
        acc.write_exr(&out).expect("write");
        out
    }
}

/// A value that differs per partial, channel and pixel, not too regular.
fn noise(seed: u32, name: &str, x: usize, y: usize) -> f32 {
    let mut h = seed.wrapping_mul(0x9E37_79B9)
        ^ (x as u32).wrapping_mul(0x85EB_CA6B)
        ^ (y as u32).wrapping_mul(0xC2B2_AE35);
    for b in name.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    (h >> 8) as f32 / (1 << 24) as f32 * 3.0
}

#[test]
fn weighted_mean_with_unequal_chunks() {
    let f = Fixture::new();
    let names = [
        "ViewLayer.Combined.A",
        "ViewLayer.Combined.R",
        "ViewLayer.Normal.X",
    ];
    let weights = [3_u32, 5, 8];
    let mut parts = Vec::new();
    for (i, &w) in weights.iter().enumerate() {
        let p = f.path(&format!("p{i}.exr"));
        write_partial(&p, &names, |n, x, y| {
            noise(i as u32, n, x, y) - if n.contains("Normal") { 1.5 } else { 0.0 }
        });
        parts.push((p, chunk(i as i64, w, i == 0)));
    }
    let out = f.merge(&parts);
    for name in names {
        let got = plane(&out, name);
        let inputs: Vec<Vec<f32>> = parts.iter().map(|(p, _)| plane(p, name)).collect();
        for px in 0..W * H {
            let num: f64 = weights
                .iter()
                .zip(&inputs)
                .map(|(&w, v)| f64::from(w) * f64::from(v[px]))
                .sum();
            let expected = (num / 16.0) as f32;
            assert_eq!(got[px], expected, "{name} pixel {px}");
        }
    }
    // The naive (unweighted) mean differs, so the weights really matter.
    let got = plane(&out, "ViewLayer.Combined.R");
    let naive: f32 = parts
        .iter()
        .map(|(p, _)| plane(p, "ViewLayer.Combined.R")[0])
        .sum::<f32>()
        / 3.0;
    assert!((got[0] - naive).abs() > 1e-4);
}

const LIGHT: [&str; 6] = [
    "ViewLayer.DiffCol.B",
    "ViewLayer.DiffCol.G",
    "ViewLayer.DiffCol.R",
    "ViewLayer.DiffDir.B",
    "ViewLayer.DiffDir.G",
    "ViewLayer.DiffDir.R",
];

#[test]
fn light_over_color_including_zero_color() {
    let f = Fixture::new();
    let layout_names = LIGHT;
    // Pixel 0: colour zero in partial 1 only. Pixel 1: colour zero in every
    // partial for G (Cycles' even-colour rule gives G the mean of R and B).
    // Pixel 2: colour zero everywhere. Other pixels: noise.
    let color = |i: usize, n: &str, x: usize, y: usize| -> f32 {
        match (x + y * W, i) {
            (0, 1) => 0.0,
            (1, _) if n.ends_with(".G") => 0.0,
            (2, _) => 0.0,
            _ => 0.1 + noise(i as u32 + 10, n, x, y),
        }
    };
    let light = |i: usize, n: &str, x: usize, y: usize| noise(i as u32 + 20, n, x, y);
    let weights = [4_u32, 9];
    let mut parts = Vec::new();
    for (i, &w) in weights.iter().enumerate() {
        let p = f.path(&format!("p{i}.exr"));
        write_partial(&p, &layout_names, |n, x, y| {
            if n.contains("Col") {
                color(i, n, x, y)
            } else {
                light(i, n, x, y)
            }
        });
        parts.push((p, chunk(i as i64, w, i == 0)));
    }
    let layout = read_layout(&parts[0].0).expect("layout");
    assert_eq!(
        layout.channels[3].rule,
        MergeRule::LightOverColor { color: 0 }
    );
    let out = f.merge(&parts);
    let merged = |c: &str| plane(&out, &format!("ViewLayer.DiffDir.{c}"));
    let (mr, mg, mb) = (merged("R"), merged("G"), merged("B"));
    let expected = |c: &str, px: usize| -> f32 {
        let (mut num, mut den) = (0.0_f64, 0.0_f64);
        for (i, &w) in weights.iter().enumerate() {
            let (x, y) = (px % W, px / W);
            let col = f64::from(color(i, &format!("ViewLayer.DiffCol.{c}"), x, y));
            num +=
                f64::from(w) * f64::from(light(i, &format!("ViewLayer.DiffDir.{c}"), x, y)) * col;
            den += f64::from(w) * col;
        }
        if den == 0.0 {
            0.0
        } else {
            (num / den) as f32
        }
    };
    for px in 3..W * H {
        assert_eq!(mr[px], expected("R", px), "R at {px}");
        assert_eq!(mb[px], expected("B", px), "B at {px}");
    }
    // Partial 1 has no colour at pixel 0: only partial 0 counts there.
    assert_eq!(mr[0], light(0, "ViewLayer.DiffDir.R", 0, 0));
    // G has no colour anywhere at pixel 1: the mean of R and B, as Cycles does.
    assert_eq!(mg[1], 0.5 * (expected("R", 1) + expected("B", 1)));
    // No colour at all: zero.
    assert_eq!((mr[2], mg[2], mb[2]), (0.0, 0.0, 0.0));
}

#[test]
fn depth_is_the_minimum_with_sample_zero_last() {
    let f = Fixture::new();
    let names = ["ViewLayer.Combined.R", "ViewLayer.Depth.Z"];
    let real = |x: usize, y: usize| {
        if x == 3 {
            1.0e10
        } else {
            2.0 + (x + y) as f32 * 0.25
        }
    };
    let mut parts = Vec::new();
    for i in 0..3 {
        let p = f.path(&format!("p{i}.exr"));
        write_partial(&p, &names, |n, x, y| match (n.contains("Depth"), i) {
            (true, 2) => real(x, y),
            (true, _) => 1.0e10,
            _ => noise(i, n, x, y),
        });
        parts.push((p, chunk(i64::from(i), 2 + i, i == 2)));
    }
    let out = f.merge(&parts);
    let depth = plane(&out, "ViewLayer.Depth.Z");
    for (px, &d) in depth.iter().enumerate() {
        assert_eq!(d, real(px % W, px / W));
    }
}

#[test]
fn from_sample_zero_comes_from_the_right_partial_in_any_order() {
    let f = Fixture::new();
    let names = [
        "ViewLayer.CryptoObject00.r",
        "ViewLayer.IndexOB.X",
        "ViewLayer.Position.X",
    ];
    let value = |i: usize, n: &str, x: usize, y: usize| {
        if i == 1 {
            noise(99, n, x, y)
        } else {
            i as f32 * 0.0
        }
    };
    let paths: Vec<PathBuf> = (0..3)
        .map(|i| {
            let p = f.path(&format!("p{i}.exr"));
            write_partial(&p, &names, |n, x, y| value(i, n, x, y));
            p
        })
        .collect();
    for order in [[0, 1, 2], [1, 0, 2], [2, 0, 1], [0, 2, 1]] {
        let parts: Vec<_> = order
            .iter()
            .map(|&i| (paths[i].clone(), chunk(i as i64, 3, i == 1)))
            .collect();
        let out = f.merge(&parts);
        for name in names {
            assert_eq!(
                plane(&out, name),
                plane(&paths[1], name),
                "{name} with order {order:?}"
            );
        }
    }
    // Before the sample-0 partial arrives, the first partial's values stand in.
    let dir = f.path("early");
    let mut acc =
        Accumulator::create(&dir, &read_layout(&paths[2]).expect("layout")).expect("create");
    acc.fold(&paths[2], chunk(2, 3, false)).expect("fold");
    acc.fold(&paths[0], chunk(0, 3, false)).expect("fold");
    assert_eq!(acc.sample_zero_chunk(), None);
    acc.write_exr(&f.path("early.exr")).expect("write");
    assert_eq!(
        plane(&f.path("early.exr"), names[1]),
        plane(&paths[2], names[1])
    );
    acc.fold(&paths[1], chunk(1, 3, true)).expect("fold");
    assert_eq!(acc.sample_zero_chunk(), Some(1));
    acc.write_exr(&f.path("late.exr")).expect("write");
    assert_eq!(
        plane(&f.path("late.exr"), names[1]),
        plane(&paths[1], names[1])
    );
}

fn three_partials(f: &Fixture) -> Vec<(PathBuf, ChunkInfo)> {
    let names = [
        "ViewLayer.Combined.R",
        "ViewLayer.Depth.Z",
        "ViewLayer.DiffCol.R",
        "ViewLayer.DiffDir.R",
        "ViewLayer.IndexOB.X",
    ];
    (0..3)
        .map(|i| {
            let p = f.path(&format!("p{i}.exr"));
            write_partial(&p, &names, |n, x, y| noise(i, n, x, y));
            (p, chunk(i64::from(i) + 10, 3 + 2 * i, i == 1))
        })
        .collect()
}

fn all_planes(path: &Path) -> Vec<Vec<f32>> {
    read_planes(path).expect("planes").planes
}

#[test]
fn a_chunk_is_folded_exactly_once() {
    let f = Fixture::new();
    let parts = three_partials(&f);
    let layout = read_layout(&parts[0].0).expect("layout");
    let mut acc = Accumulator::create(&f.path("acc"), &layout).expect("create");
    assert_eq!(
        acc.fold(&parts[0].0, parts[0].1).expect("fold"),
        FoldOutcome::Folded
    );
    acc.write_exr(&f.path("once.exr")).expect("write");
    assert_eq!(
        acc.fold(&parts[0].0, parts[0].1).expect("refold"),
        FoldOutcome::AlreadyFolded
    );
    // Even with another file under the same id: nothing changes.
    assert_eq!(
        acc.fold(&parts[2].0, parts[0].1).expect("refold"),
        FoldOutcome::AlreadyFolded
    );
    assert_eq!(acc.total_samples(), 3);
    assert_eq!(acc.folded_chunks(), vec![10]);
    acc.write_exr(&f.path("twice.exr")).expect("write");
    assert_eq!(
        all_planes(&f.path("once.exr")),
        all_planes(&f.path("twice.exr"))
    );
    // The same id with other samples is a caller bug, reported as such.
    let err = acc
        .fold(&parts[0].0, chunk(10, 4, false))
        .expect_err("conflict");
    assert!(
        matches!(err, MergeError::ChunkConflict { id: 10, .. }),
        "{err}"
    );
    // So are zero samples and a second sample-0 chunk.
    assert!(matches!(
        acc.fold(&parts[1].0, chunk(50, 0, false)),
        Err(MergeError::ZeroSamples { id: 50 })
    ));
    acc.fold(&parts[1].0, parts[1].1).expect("fold sample 0");
    let err = acc
        .fold(&parts[2].0, chunk(12, 1, true))
        .expect_err("two sample-0 chunks");
    assert_eq!(
        err.to_string(),
        "chunk 12 claims to hold sample 0, but chunk 11 already did"
    );
    // After a reopen, the ids are still known.
    drop(acc);
    let mut acc = Accumulator::open(&f.path("acc")).expect("open");
    assert_eq!(
        acc.fold(&parts[1].0, parts[1].1).expect("refold"),
        FoldOutcome::AlreadyFolded
    );
    assert_eq!(acc.total_samples(), 8);
}

#[test]
fn open_resumes_after_folds() {
    let f = Fixture::new();
    let parts = three_partials(&f);
    let one_go = f.merge(&parts);
    let one_go = all_planes(&one_go);

    let dir = f.path("resumed");
    let layout = read_layout(&parts[0].0).expect("layout");
    {
        let mut acc = Accumulator::create(&dir, &layout).expect("create");
        acc.fold(&parts[0].0, parts[0].1).expect("fold");
        acc.fold(&parts[1].0, parts[1].1).expect("fold");
        // A second accumulator on the same directory is refused while this one lives.
        let err = Accumulator::open(&dir).expect_err("locked");
        assert!(err.to_string().contains("in use"), "{err}");
    }
    let mut acc = Accumulator::open(&dir).expect("open");
    assert_eq!(acc.total_samples(), 3 + 5);
    assert_eq!(acc.folded_chunks(), vec![10, 11]);
    assert_eq!(acc.sample_zero_chunk(), Some(11));
    assert_eq!(acc.layout().channels, layout.channels);
    acc.fold(&parts[2].0, parts[2].1).expect("fold");
    acc.write_exr(&f.path("resumed.exr")).expect("write");
    assert_eq!(all_planes(&f.path("resumed.exr")), one_go);
    // Creating over an existing accumulator is refused.
    drop(acc);
    assert!(Accumulator::create(&dir, &layout).is_err());
}

#[test]
fn a_crash_in_the_middle_of_a_fold_leaves_the_state_before_it() {
    let f = Fixture::new();
    let parts = three_partials(&f);
    let dir = f.path("acc");
    let layout = read_layout(&parts[0].0).expect("layout");
    {
        let mut acc = Accumulator::create(&dir, &layout).expect("create");
        acc.fold(&parts[0].0, parts[0].1).expect("fold");
        acc.write_exr(&f.path("before.exr")).expect("write");
        // The process dies after one block of the next partial was added to
        // the running sums: they are half-updated, and the partial waits in
        // the journal under its temporary name.
        acc.crash = Some(Crash::AfterBlocks(1));
        assert!(acc.fold(&parts[1].0, parts[1].1).is_err());
        assert!(dir.join("partials/incoming.tmp").exists());
    }
    // A crash may also leave a half-written manifest and a half-copied partial.
    std::fs::write(dir.join("manifest.json.tmp"), b"{\"format\": 1, \"gener").expect("write tmp");
    let staged = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("partials/incoming.tmp"))
        .expect("staged");
    staged
        .set_len(staged.metadata().expect("len").len() / 2)
        .expect("truncate");
    drop(staged);
    let mut acc = Accumulator::open(&dir).expect("open");
    assert_eq!(acc.total_samples(), 3);
    assert_eq!(acc.folded_chunks(), vec![10]);
    assert!(!dir.join("manifest.json.tmp").exists());
    assert!(!dir.join("partials/incoming.tmp").exists());
    acc.write_exr(&f.path("after_crash.exr")).expect("write");
    assert_eq!(
        all_planes(&f.path("before.exr")),
        all_planes(&f.path("after_crash.exr"))
    );
    // The interrupted chunk can be folded again and the result is as if
    // nothing had happened.
    acc.fold(&parts[1].0, parts[1].1).expect("fold");
    acc.fold(&parts[2].0, parts[2].1).expect("fold");
    acc.write_exr(&f.path("resumed.exr")).expect("write");
    let one_go = f.merge(&parts);
    assert_eq!(all_planes(&f.path("resumed.exr")), all_planes(&one_go));
}

#[test]
fn a_fold_that_crashed_after_its_commit_is_refolded_on_open() {
    let f = Fixture::new();
    let parts = three_partials(&f);
    let dir = f.path("acc");
    let layout = read_layout(&parts[0].0).expect("layout");
    {
        let mut acc = Accumulator::create(&dir, &layout).expect("create");
        acc.fold(&parts[0].0, parts[0].1).expect("fold");
        // The partial is committed to the journal, but the process dies
        // before the sums are marked complete.
        acc.crash = Some(Crash::AfterCommit);
        assert!(acc.fold(&parts[1].0, parts[1].1).is_err());
    }
    let mut acc = Accumulator::open(&dir).expect("open");
    assert_eq!(acc.folded_chunks(), vec![10, 11]);
    assert_eq!(acc.total_samples(), 8);
    assert_eq!(acc.sample_zero_chunk(), Some(11));
    assert_eq!(
        acc.fold(&parts[1].0, parts[1].1).expect("refold"),
        FoldOutcome::AlreadyFolded
    );
    acc.write_exr(&f.path("recovered.exr")).expect("write");
    let expected = f.merge(&parts[..2]);
    assert_eq!(all_planes(&f.path("recovered.exr")), all_planes(&expected));
}

/// Overwrites the sums (not the stamp) of a closed accumulator with garbage.
fn scribble_over_sums(path: &Path) {
    use std::io::{Seek, SeekFrom, Write};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("sums");
    file.seek(SeekFrom::Start(4096)).expect("seek");
    file.write_all(&[0x5a; 4096]).expect("scribble");
}

#[test]
fn sums_are_rebuilt_unless_their_stamp_vouches_for_them() {
    let f = Fixture::new();
    let parts = three_partials(&f);
    let dir = f.path("acc");
    let layout = read_layout(&parts[0].0).expect("layout");
    let sums_path;
    {
        let mut acc = Accumulator::create(&dir, &layout).expect("create");
        acc.fold(&parts[0].0, parts[0].1).expect("fold");
        acc.fold(&parts[1].0, parts[1].1).expect("fold");
        acc.write_exr(&f.path("expected.exr")).expect("write");
        sums_path = acc.sums_path();
    }
    let expected = all_planes(&f.path("expected.exr"));
    let reopened = |name: &str| {
        let acc = Accumulator::open(&dir).expect("open");
        assert_eq!(acc.folded_chunks(), vec![10, 11]);
        acc.write_exr(&f.path(name)).expect("write");
        all_planes(&f.path(name))
    };
    // Within one boot, complete sums are used as they are (which is what makes
    // reopening cheap): garbage in them shows.
    scribble_over_sums(&sums_path);
    assert_ne!(reopened("trusted.exr"), expected);
    // Sums stamped in another boot are rebuilt from the journal.
    {
        let mut acc = Accumulator::open(&dir).expect("open");
        acc.forget_boot();
    }
    scribble_over_sums(&sums_path);
    assert_eq!(reopened("other_boot.exr"), expected);
    // So are missing sums.
    std::fs::remove_file(&sums_path).expect("remove sums");
    assert_eq!(reopened("missing.exr"), expected);
}

#[test]
fn fold_owned_takes_the_file_over() {
    let f = Fixture::new();
    let parts = three_partials(&f);
    let dir = f.path("acc");
    let layout = read_layout(&parts[0].0).expect("layout");
    let mut acc = Accumulator::create(&dir, &layout).expect("create");
    let upload = |name: &str, from: &Path| {
        let p = f.path(name);
        std::fs::copy(from, &p).expect("copy");
        p
    };
    let first = upload("upload_1.exr", &parts[0].0);
    assert_eq!(
        acc.fold_owned(first.clone(), parts[0].1).expect("fold"),
        FoldOutcome::Folded
    );
    assert!(!first.exists());
    assert!(dir.join("partials/000001.chunk10.samples3.exr").exists());
    // Already folded: nothing changes and the upload is deleted.
    let again = upload("upload_2.exr", &parts[0].0);
    assert_eq!(
        acc.fold_owned(again.clone(), parts[0].1).expect("refold"),
        FoldOutcome::AlreadyFolded
    );
    assert!(!again.exists());
    // A bad upload is refused, deleted, and changes nothing.
    let bad = f.path("upload_3.exr");
    std::fs::write(&bad, b"not an image").expect("write");
    let err = acc.fold_owned(bad.clone(), parts[1].1).expect_err("bad");
    assert!(
        matches!(err, MergeError::NotExr { .. }) && err.is_bad_input(),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!("`{}` is not an OpenEXR file", bad.display())
    );
    assert!(!bad.exists());
    assert_eq!(acc.folded_chunks(), vec![10]);
    let second = upload("upload_4.exr", &parts[1].0);
    acc.fold_owned(second, parts[1].1).expect("fold");
    let third = upload("upload_5.exr", &parts[2].0);
    acc.fold_owned(third, parts[2].1).expect("fold");
    acc.write_exr(&f.path("owned.exr")).expect("write");
    drop(acc);
    assert_eq!(
        all_planes(&f.path("owned.exr")),
        all_planes(&f.merge(&parts))
    );
}

#[test]
fn discard_removes_the_accumulator() {
    let f = Fixture::new();
    let parts = three_partials(&f);
    let dir = f.path("acc");
    let mut acc =
        Accumulator::create(&dir, &read_layout(&parts[0].0).expect("layout")).expect("create");
    acc.fold(&parts[0].0, parts[0].1).expect("fold");
    acc.discard().expect("discard");
    assert!(!dir.exists());
    assert!(parts[0].0.exists());
    let err = Accumulator::open(&dir).expect_err("gone");
    assert!(!err.is_bad_input(), "{err}");
}

#[test]
fn errors_say_whose_fault_they_are() {
    let f = Fixture::new();
    let parts = three_partials(&f);
    let dir = f.path("acc");
    let mut acc =
        Accumulator::create(&dir, &read_layout(&parts[0].0).expect("layout")).expect("create");
    let err = acc
        .fold(&f.path("no_such_file.exr"), chunk(1, 1, false))
        .expect_err("missing");
    assert!(
        matches!(err, MergeError::Io { .. }) && !err.is_bad_input(),
        "{err}"
    );
    acc.fold(&parts[1].0, parts[1].1).expect("fold");
    for err in [
        acc.fold(&parts[0].0, chunk(11, 9, true))
            .expect_err("conflict"),
        acc.fold(&parts[0].0, chunk(12, 0, false))
            .expect_err("zero samples"),
        acc.fold(&parts[0].0, chunk(13, 2, true))
            .expect_err("sample 0 twice"),
    ] {
        assert!(err.is_bad_input(), "{err}");
    }
    let err = Accumulator::open(&dir).expect_err("locked");
    assert!(!err.is_bad_input(), "{err}");
}

#[test]
fn merging_copies_of_one_partial_returns_it() {
    let f = Fixture::new();
    let names = [
        "ViewLayer.Combined.A",
        "ViewLayer.Combined.R",
        "ViewLayer.CryptoObject00.r",
        "ViewLayer.Depth.Z",
        "ViewLayer.DiffCol.B",
        "ViewLayer.DiffCol.G",
        "ViewLayer.DiffCol.R",
        "ViewLayer.DiffInd.B",
        "ViewLayer.DiffInd.G",
        "ViewLayer.DiffInd.R",
        "ViewLayer.IndexMA.X",
        "ViewLayer.Normal.X",
    ];
    let p = f.path("p.exr");
    write_partial(&p, &names, |n, x, y| match n {
        n if n.contains("DiffCol") && x == 1 => 0.0,
        n if n.contains("Depth") && y == 2 => 1e10,
        n if n.contains("Normal") => noise(3, n, x, y) - 1.5,
        n => noise(3, n, x, y),
    });
    let parts: Vec<_> = [1_u32, 2, 3, 5, 8]
        .iter()
        .enumerate()
        .map(|(i, &s)| (p.clone(), chunk(i as i64, s, i == 3)))
        .collect();
    let out = f.merge(&parts);
    // DiffInd is rebuilt from its colour; where the colour is zero the input
    // holds whatever it holds, the output holds zero (both are "no light").
    let (a, b) = (
        read_planes(&p).expect("planes"),
        read_planes(&out).expect("planes"),
    );
    assert_eq!(a.names, b.names);
    for (name, (pa, pb)) in a.names.iter().zip(a.planes.iter().zip(&b.planes)) {
        for px in 0..W * H {
            if name.contains("DiffInd") && px % W == 1 {
                assert_eq!(pb[px], 0.0);
            } else {
                assert_eq!(pa[px], pb[px], "{name} at {px}");
            }
        }
    }
    // Header attributes are kept, the samples attribute holds the total.
    let meta = exr::meta::MetaData::read_from_file(&out, false).expect("meta");
    let attrs = &meta.headers[0].own_attributes.other;
    assert_eq!(
        attrs.get(&Text::from("cycles.ViewLayer.samples")),
        Some(&AttributeValue::Text(Text::from("19")))
    );
    assert!(attrs.contains_key(&Text::from("BlenderMultiChannel")));
    assert_eq!(meta.headers[0].compression, Compression::ZIP16);
}

#[test]
fn bad_partials_are_refused_and_change_nothing() {
    let f = Fixture::new();
    let names = ["ViewLayer.Combined.R", "ViewLayer.Depth.Z"];
    let good = f.path("good.exr");
    write_partial(&good, &names, |n, x, y| noise(1, n, x, y));
    let layout = read_layout(&good).expect("layout");
    validate_partial(&good, &layout).expect("good partial");

    let truncated = f.path("truncated.exr");
    let bytes = std::fs::read(&good).expect("read");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).expect("write");
    let cut_in_header = f.path("cut_in_header.exr");
    std::fs::write(&cut_in_header, &bytes[..40]).expect("write");

    let wrong_size = f.path("chunk_7.exr");
    write_spec(
        &wrong_size,
        &Spec {
            width: 5,
            height: 4,
            ..Spec::new(&names)
        },
        |_, _, _| 1.0,
    );
    let missing = f.path("missing.exr");
    write_partial(&missing, &names[..1], |_, _, _| 1.0);
    let extra = f.path("extra.exr");
    write_partial(
        &extra,
        &[
            "ViewLayer.Combined.R",
            "ViewLayer.Depth.Z",
            "ViewLayer.Emit.R",
        ],
        |_, _, _| 1.0,
    );
    let not_exr = f.path("notes.exr");
    std::fs::write(&not_exr, b"hello, this is not an image").expect("write");
    let half = f.path("half.exr");
    write_spec(
        &half,
        &Spec {
            sample_type: SampleType::F16,
            ..Spec::new(&names)
        },
        |_, _, _| 1.0,
    );
    let tiled = f.path("tiled.exr");
    write_spec(
        &tiled,
        &Spec {
            tiled: true,
            ..Spec::new(&names)
        },
        |_, _, _| 1.0,
    );
    let multipart = f.path("multipart.exr");
    let spec = Spec::new(&names);
    let mut second = layer_of(&spec, &|_, _, _| 2.0);
    second.attributes.layer_name = Some(Text::from("second"));
    let mut first = layer_of(&spec, &|_, _, _| 1.0);
    first.attributes.layer_name = Some(Text::from("first"));
    let layers: SmallVec<[Layer<AnyChannels<FlatSamples>>; 2]> =
        SmallVec::from_vec(vec![first, second]);
    Image::from_layers(
        ImageAttributes::new(IntegerBounds::from_dimensions((W, H))),
        layers,
    )
    .write()
    .to_file(&multipart)
    .expect("write multipart");

    let cases: Vec<(&PathBuf, String)> = vec![
        (&truncated, format!("`{}` is truncated", truncated.display())),
        (&cut_in_header, format!("`{}` is truncated", cut_in_header.display())),
        (&wrong_size, format!("`{}` is 5x4 but the frame is {W}x{H}", wrong_size.display())),
        (&missing, format!("`{}` lacks channel `ViewLayer.Depth.Z`", missing.display())),
        (&extra, format!("`{}` has channel `ViewLayer.Emit.R`, which the frame does not have", extra.display())),
        (&not_exr, format!("`{}` is not an OpenEXR file", not_exr.display())),
        (
            &half,
            format!(
                "`{}` stores channel `ViewLayer.Combined.R` as 16-bit float, but only 32-bit float channels can be merged",
                half.display()
            ),
        ),
        (&tiled, format!("`{}` is tiled; only scanline files can be merged", tiled.display())),
        (&multipart, format!("`{}` has 2 parts; only single-part files can be merged", multipart.display())),
    ];
    let dir = f.path("acc");
    let mut acc = Accumulator::create(&dir, &layout).expect("create");
    acc.fold(&good, chunk(1, 4, true)).expect("fold");
    acc.write_exr(&f.path("before.exr")).expect("write");
    for (i, (path, message)) in cases.iter().enumerate() {
        let err = validate_partial(path, &layout).expect_err("validation must fail");
        assert_eq!(err.to_string(), *message);
        assert!(err.is_bad_input(), "{err}");
        let err = acc
            .fold(path, chunk(100 + i as i64, 3, false))
            .expect_err("fold must fail");
        assert_eq!(err.to_string(), *message);
        assert!(err.is_bad_input(), "{err}");
    }
    assert_eq!(acc.total_samples(), 4);
    assert_eq!(acc.folded_chunks(), vec![1]);
    acc.write_exr(&f.path("after.exr")).expect("write");
    assert_eq!(
        all_planes(&f.path("before.exr")),
        all_planes(&f.path("after.exr"))
    );
    // The state survives a reopen unchanged as well.
    drop(acc);
    let acc = Accumulator::open(&dir).expect("open");
    assert_eq!(acc.total_samples(), 4);
}

#[test]
fn damaged_pixel_data_is_reported_and_changes_nothing() {
    let f = Fixture::new();
    let names = ["ViewLayer.Combined.R"];
    let good = f.path("good.exr");
    // Smooth values compress, so the file holds zlib streams (noise would be
    // stored raw, where damage cannot be detected). Many blocks, so that
    // others are folded before the damaged one is met.
    let spec = Spec {
        height: 16 * 40,
        ..Spec::new(&names)
    };
    write_spec(&good, &spec, |_, x, y| (x + y) as f32 * 0.5);
    let other = f.path("other.exr");
    write_spec(&other, &spec, |_, x, y| (x * y) as f32 * 0.25);
    let layout = read_layout(&good).expect("layout");
    let mut bytes = std::fs::read(&good).expect("read");
    let n = bytes.len();
    for b in &mut bytes[n - 40..n - 10] {
        *b ^= 0x5a;
    }
    let damaged = f.path("damaged.exr");
    std::fs::write(&damaged, &bytes).expect("write");
    let err = validate_partial(&damaged, &layout).expect_err("damaged");
    assert!(
        matches!(
            err,
            MergeError::Corrupt { .. } | MergeError::Truncated { .. }
        ),
        "{err}"
    );
    assert!(err.is_bad_input());

    let dir = f.path("acc");
    let mut acc = Accumulator::create(&dir, &layout).expect("create");
    acc.fold(&other, chunk(1, 2, true)).expect("fold");
    acc.write_exr(&f.path("before.exr")).expect("write");
    let err = acc.fold(&damaged, chunk(2, 3, false)).expect_err("damaged");
    assert!(err.is_bad_input(), "{err}");
    assert_eq!(acc.folded_chunks(), vec![1]);
    acc.write_exr(&f.path("after.exr")).expect("write");
    assert_eq!(
        all_planes(&f.path("before.exr")),
        all_planes(&f.path("after.exr"))
    );
    acc.fold(&good, chunk(2, 3, false)).expect("fold");
    assert_eq!(acc.total_samples(), 5);
}

#[test]
fn png_preview_is_srgb_with_alpha_and_downscales() {
    let f = Fixture::new();
    let names = [
        "ViewLayer.Combined.A",
        "ViewLayer.Combined.B",
        "ViewLayer.Combined.G",
        "ViewLayer.Combined.R",
    ];
    let p = f.path("p.exr");
    // Premultiplied: alpha 0.5 and colour 0.1 mean a straight colour of 0.2.
    write_partial(&p, &names, |n, x, _| match n {
        "ViewLayer.Combined.A" => 0.5,
        "ViewLayer.Combined.R" => 0.1,
        "ViewLayer.Combined.G" => {
            if x == 0 {
                4.0
            } else {
                0.0
            }
        }
        _ => -1.0,
    });
    let dir = f.path("acc");
    let mut acc = Accumulator::create(&dir, &read_layout(&p).expect("layout")).expect("create");
    acc.fold(&p, chunk(1, 2, true)).expect("fold");
    let png_path = f.path("preview.png");
    acc.write_png(&png_path, None).expect("png");
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&png_path).expect("open"),
    ));
    let mut reader = decoder.read_info().expect("png info");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("frame");
    assert_eq!(
        (info.width, info.height, info.color_type),
        (W as u32, H as u32, png::ColorType::Rgba)
    );
    // sRGB(0.2) = 0.4845 -> 124; G clamps to 255 at x = 0 and is 0 elsewhere; B clamps to 0.
    assert_eq!(&buf[0..4], &[124, 255, 0, 128]);
    assert_eq!(&buf[4..8], &[124, 0, 0, 128]);

    acc.write_png(&png_path, Some(4)).expect("png");
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&png_path).expect("open"),
    ));
    let reader = decoder.read_info().expect("png info");
    let (w, h) = (reader.info().width, reader.info().height);
    assert!(w.max(h) <= 4 && w >= 1 && h >= 1, "{w}x{h}");
}

#[test]
fn merge_files_and_compare() {
    let f = Fixture::new();
    let parts = three_partials(&f);
    let out = f.path("merged_files.exr");
    crate::merge_files(&parts, &out).expect("merge");
    let report = crate::compare::compare(&out, &f.merge(&parts)).expect("compare");
    assert!(report.channels.iter().all(|c| c.max_abs == 0.0));
    let report = crate::compare::compare(&out, &parts[0].0).expect("compare");
    let worst = report.worst_design().expect("channels");
    assert!(worst.max_rel_design > 0.01);
    // Different channel sets cannot be compared.
    let other = f.path("other.exr");
    write_partial(&other, &["ViewLayer.Emit.R"], |_, _, _| 0.0);
    assert!(crate::compare::compare(&out, &other).is_err());
}

#[test]
fn headers_that_cannot_be_written_back_are_refused() {
    // Found by fuzzing: the header was only parsed, not validated, so
    // partials whose header the merged frame cannot carry passed
    // `read_layout` and `validate_partial`. With channels out of order
    // (OpenEXR keeps them sorted), `Accumulator::create` failed to store the
    // header, with an error that blamed the accumulator; with a custom
    // attribute under a reserved name (a standard name with another type),
    // the partial was folded and every later `write_exr` of the frame failed.
    let f = Fixture::new();
    let names = ["ViewLayer.Combined.A", "ViewLayer.Combined.B"];
    let good = f.path("good.exr");
    let mut layer = layer_of(&Spec::new(&names), &|n, x, y| noise(1, n, x, y));
    layer
        .attributes
        .other
        .insert(Text::from("OWNER"), AttributeValue::I32(7));
    Image::from_layer(layer)
        .write()
        .to_file(&good)
        .expect("write partial");
    let patched = |name: &str, from: &[u8], to: &[u8]| {
        let mut bytes = std::fs::read(&good).expect("read");
        let at = bytes
            .windows(from.len())
            .position(|w| w == from)
            .expect("bytes to patch");
        bytes[at..at + to.len()].copy_from_slice(to);
        let path = f.path(name);
        std::fs::write(&path, &bytes).expect("write");
        path
    };
    let unsorted = patched("unsorted.exr", b"Combined.A\0", b"Combined.C\0");
    let reserved = patched("reserved.exr", b"OWNER\0int\0", b"owner\0int\0");

    let layout = read_layout(&good).expect("layout");
    let mut acc = Accumulator::create(&f.path("acc"), &layout).expect("create");
    acc.fold(&good, chunk(1, 2, true)).expect("fold");
    for (i, path) in [unsorted, reserved].iter().enumerate() {
        let err = read_layout(path).expect_err("a header that cannot be written back");
        assert!(matches!(err, MergeError::Corrupt { .. }), "{err}");
        assert!(err.is_bad_input(), "{err}");
        let err = validate_partial(path, &layout).expect_err("cannot be written back");
        assert!(err.is_bad_input(), "{err}");
        let err = acc
            .fold(path, chunk(2 + i as i64, 3, false))
            .expect_err("cannot be written back");
        assert!(err.is_bad_input(), "{err}");
    }
    assert_eq!(acc.folded_chunks(), vec![1]);
    assert_eq!(acc.total_samples(), 2);
    acc.write_exr(&f.path("merged.exr")).expect("write");
}

#[test]
fn blocks_too_small_for_their_pixels_are_refused_before_decoding() {
    // Found by fuzzing: a 1.7 KB partial whose header claims a data window
    // 134 million pixels wide made `validate_partial` allocate 42 GB for its
    // one ZIP block before inflating it. Deflate cannot expand one byte to
    // more than 1032, so such a block is refused from the block table.
    let f = Fixture::new();
    let names = ["ViewLayer.Combined.R"];
    let good = f.path("good.exr");
    write_partial(&good, &names, |_, x, y| (x + y) as f32);
    let layout = read_layout(&good).expect("layout");
    let mut bytes = std::fs::read(&good).expect("read");
    let window = b"dataWindow\0box2i\0";
    let at = bytes
        .windows(window.len())
        .position(|w| w == window)
        .expect("data window");
    let max_x = at + window.len() + 4 + 8;
    bytes[max_x..max_x + 4].copy_from_slice(&(1_i32 << 27).to_le_bytes());
    let wide = f.path("wide.exr");
    std::fs::write(&wide, &bytes).expect("write");

    let own = read_layout(&wide).expect("the header alone is plausible");
    assert_eq!(own.width, (1 << 27) + 1);
    for against in [&own, &layout] {
        let err = validate_partial(&wide, against).expect_err("forged size");
        assert!(matches!(err, MergeError::Corrupt { .. }), "{err}");
        assert!(
            err.to_string().contains("too small to hold its pixels"),
            "{err}"
        );
    }
    let mut acc = Accumulator::create(&f.path("acc"), &layout).expect("create");
    let err = acc.fold(&wide, chunk(1, 2, true)).expect_err("forged size");
    assert!(err.is_bad_input(), "{err}");
    assert!(acc.folded_chunks().is_empty());
}
