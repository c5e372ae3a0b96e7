//! The shape of a frame: size, channels, merge rule per channel, and the header
//! attributes that the merged file carries over from the partials.

use std::io::Write;
use std::path::Path;

use exr::meta::attribute::{AttributeValue, Text};
use exr::meta::header::Header;
use exr::meta::MetaData;
use serde::{Deserialize, Serialize};

use crate::error::{MergeError, Result};

/// How the values of one channel of several partials combine into the merged value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MergeRule {
    /// `Σ w·v / Σ w`, with `w` the samples a partial rendered.
    WeightedMean,
    /// A light pass Cycles stores divided by its colour pass (`DiffDir` by
    /// `DiffCol`, ...): `Σ w·L·C / Σ w·C`, where `color` is the index in
    /// [`Layout::channels`] of the matching colour channel (same layer, same
    /// component). Where `Σ w·C` is zero the result follows Cycles' own
    /// "even colour" division: a zero component takes the mean of the others.
    LightOverColor {
        /// Index of the colour channel in [`Layout::channels`].
        color: usize,
    },
    /// The minimum over the partials (`Depth`: only the partial holding sample
    /// 0 writes real depth, the others hold 1e10).
    Min,
    /// Taken from the partial holding absolute sample 0; until that partial is
    /// folded, from the first partial folded.
    FromSampleZero,
}

/// One channel of the frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    /// Full channel name, for example `ViewLayer.DiffDir.R`.
    pub name: String,
    /// How partials combine in this channel.
    pub rule: MergeRule,
}

/// The frame every partial must match: size, channels in file order (OpenEXR
/// keeps them sorted by name) with their merge rules, and the header of the
/// partial it was read from, whose attributes the merged file keeps.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Width of the data window in pixels.
    pub width: u32,
    /// Height of the data window in pixels.
    pub height: u32,
    /// Channels in file order, each with its merge rule.
    pub channels: Vec<Channel>,
    header: Header,
}

/// Light passes stored divided by a colour pass, with that colour pass.
const LIGHT_PASSES: [(&str, &str); 6] = [
    ("DiffDir", "DiffCol"),
    ("DiffInd", "DiffCol"),
    ("GlossDir", "GlossCol"),
    ("GlossInd", "GlossCol"),
    ("TransDir", "TransCol"),
    ("TransInd", "TransCol"),
];

/// Passes Cycles writes only while rendering absolute sample 0; partials
/// starting later hold zero there. Verified with Blender 3.4 and 4.5 (see the
/// crate README): `Normal`, `UV`, `Denoising Depth` and the other data passes
/// are accumulated every sample and merge as weighted means.
const SAMPLE_ZERO_PASSES: [&str; 3] = ["IndexOB", "IndexMA", "Position"];

/// A channel name cut into `prefix.pass.suffix`, where the suffix is the
/// component (and the view, in multi-view files).
struct NameParts<'a> {
    prefix: &'a str,
    pass: &'a str,
    suffix: &'a str,
}

fn split_name<'a>(name: &'a str, views: &[String]) -> Option<NameParts<'a>> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() < 2 {
        return None;
    }
    // `layer.pass.view.component` in multi-view files, `layer.pass.component` otherwise.
    let pass_at = if parts.len() >= 3 && views.iter().any(|v| v == parts[parts.len() - 2]) {
        parts.len() - 3
    } else {
        parts.len() - 2
    };
    let prefix_len: usize = parts[..pass_at].iter().map(|p| p.len() + 1).sum();
    let pass = parts[pass_at];
    let suffix_start = prefix_len + pass.len();
    Some(NameParts {
        prefix: &name[..prefix_len],
        pass,
        suffix: &name[suffix_start..],
    })
}

/// The rule for each channel of a list of names in file order.
pub(crate) fn classify(names: &[String], views: &[String]) -> Vec<MergeRule> {
    names
        .iter()
        .map(|name| {
            let Some(parts) = split_name(name, views) else {
                return MergeRule::WeightedMean;
            };
            if parts.pass == "Depth" {
                return MergeRule::Min;
            }
            if parts.pass.starts_with("Crypto") || SAMPLE_ZERO_PASSES.contains(&parts.pass) {
                return MergeRule::FromSampleZero;
            }
            if let Some((_, color_pass)) =
                LIGHT_PASSES.iter().find(|(light, _)| *light == parts.pass)
            {
                let color_name = format!("{}{}{}", parts.prefix, color_pass, parts.suffix);
                if let Some(color) = names.iter().position(|n| *n == color_name) {
                    return MergeRule::LightOverColor { color };
                }
            }
            MergeRule::WeightedMean
        })
        .collect()
}

impl Layout {
    /// Builds the layout of a partial from its (already checked) header.
    pub(crate) fn from_header(header: Header) -> Self {
        let names: Vec<String> = header
            .channels
            .list
            .iter()
            .map(|c| c.name.to_string())
            .collect();
        let rules = classify(&names, &views_of(&header));
        let channels = names
            .into_iter()
            .zip(rules)
            .map(|(name, rule)| Channel { name, rule })
            .collect();
        let size = header.layer_size;
        Self {
            width: u32::try_from(size.width()).unwrap_or(u32::MAX),
            height: u32::try_from(size.height()).unwrap_or(u32::MAX),
            channels,
            header,
        }
    }

    /// The header the merged file is based on.
    pub(crate) fn header(&self) -> &Header {
        &self.header
    }

    /// Index of the channel called `name`.
    pub fn channel_index(&self, name: &str) -> Option<usize> {
        self.channels.iter().position(|c| c.name == name)
    }

    /// Names of the header attributes the merged file carries over, for
    /// example `BlenderMultiChannel` and `cycles.ViewLayer.samples`.
    pub fn attribute_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .header
            .shared_attributes
            .other
            .keys()
            .chain(self.header.own_attributes.other.keys())
            .map(ToString::to_string)
            .collect();
        names.sort();
        names
    }

    /// Checks the rules for consistency: a `LightOverColor` must point at a
    /// `WeightedMean` channel, because the colour channel's weighted sum is
    /// the denominator.
    pub(crate) fn check_rules(&self) -> Result<()> {
        for channel in &self.channels {
            if let MergeRule::LightOverColor { color } = channel.rule {
                let ok = self
                    .channels
                    .get(color)
                    .is_some_and(|c| c.rule == MergeRule::WeightedMean);
                if !ok {
                    return Err(MergeError::Invalid(format!(
                        "channel `{}` is divided by channel #{color}, which is not a weighted-mean colour channel",
                        channel.name
                    )));
                }
            }
        }
        Ok(())
    }

    /// Groups of three `LightOverColor` channels that are the R, G and B of one
    /// light pass, in that order: Cycles divides them as one colour.
    pub(crate) fn light_triples(&self) -> Vec<[usize; 3]> {
        let views = views_of(&self.header);
        let mut triples = Vec::new();
        for (r, channel) in self.channels.iter().enumerate() {
            if !matches!(channel.rule, MergeRule::LightOverColor { .. }) {
                continue;
            }
            let Some(parts) = split_name(&channel.name, &views) else {
                continue;
            };
            let Some(stem) = parts.suffix.strip_suffix(".R") else {
                continue;
            };
            let find = |component: &str| {
                let name = format!("{}{}{}.{component}", parts.prefix, parts.pass, stem);
                self.channel_index(&name)
                    .filter(|&i| matches!(self.channels[i].rule, MergeRule::LightOverColor { .. }))
            };
            if let (Some(g), Some(b)) = (find("G"), find("B")) {
                triples.push([r, g, b]);
            }
        }
        triples
    }

    /// Indices of the R, G, B and (if present) A channels of the first view
    /// layer's Combined pass (layers taken in file order), or of plain `R`,
    /// `G`, `B`, `A` channels in a single-layer file.
    pub(crate) fn combined_channels(&self) -> Option<([usize; 3], Option<usize>)> {
        let views = views_of(&self.header);
        let mut prefixes: Vec<String> = Vec::new();
        for channel in &self.channels {
            if let Some(parts) = split_name(&channel.name, &views) {
                if parts.pass == "Combined" {
                    prefixes.push(format!(
                        "{}Combined{}",
                        parts.prefix,
                        parts.suffix.rsplit_once('.').map_or("", |s| s.0)
                    ));
                }
            }
        }
        prefixes.push(String::new());
        prefixes.into_iter().find_map(|stem| {
            let find = |c: &str| {
                let name = if stem.is_empty() {
                    c.to_owned()
                } else {
                    format!("{stem}.{c}")
                };
                self.channel_index(&name)
            };
            Some(([find("R")?, find("G")?, find("B")?], find("A")))
        })
    }

    /// Writes the header alone as a small OpenEXR file (magic, version,
    /// header, no pixels), from which [`Layout::read_header_file`] restores it.
    pub(crate) fn write_header_file(&self, path: &Path) -> Result<()> {
        let io = |e| MergeError::io(path, e);
        let headers = [self.header.clone()];
        let requirements = MetaData::validate(&headers, false)
            .map_err(|e| MergeError::Invalid(format!("the frame header cannot be stored: {e}")))?;
        let mut bytes = Vec::new();
        exr::meta::magic_number::write(&mut bytes)
            .and_then(|()| requirements.write(&mut bytes))
            .and_then(|()| Header::write_all(&headers, &mut bytes, requirements.is_multilayer()))
            .map_err(|e| MergeError::Invalid(format!("the frame header cannot be stored: {e}")))?;
        let mut file = std::fs::File::create(path).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)
    }

    /// Restores the header written by [`Layout::write_header_file`], with the
    /// given channels (whose names must match the header's).
    pub(crate) fn read_header_file(path: &Path, channels: Vec<Channel>) -> Result<Self> {
        let meta =
            MetaData::read_from_file(path, false).map_err(|e| MergeError::from_exr(path, e))?;
        let header = meta
            .headers
            .into_iter()
            .next()
            .ok_or_else(|| MergeError::Corrupt {
                path: path.to_path_buf(),
                detail: "no header".to_owned(),
            })?;
        let mut layout = Self::from_header(header);
        let same = layout.channels.len() == channels.len()
            && layout
                .channels
                .iter()
                .zip(&channels)
                .all(|(a, b)| a.name == b.name);
        if !same {
            return Err(MergeError::Corrupt {
                path: path.to_path_buf(),
                detail: "its channels differ from the accumulator manifest".to_owned(),
            });
        }
        layout.channels = channels;
        Ok(layout)
    }

    /// The header for the merged file: the partials' header with `compression`
    /// and every `cycles.<layer>.samples` attribute set to `total_samples`.
    pub(crate) fn output_header(
        &self,
        compression: exr::compression::Compression,
        total_samples: u64,
    ) -> Header {
        let mut header = self.header.clone();
        let (blocks, line_order) = (header.blocks, header.line_order);
        header = header.with_encoding(compression, blocks, line_order);
        for attributes in [
            &mut header.own_attributes.other,
            &mut header.shared_attributes.other,
        ] {
            for (name, value) in attributes.iter_mut() {
                let name = name.to_string();
                if name.starts_with("cycles.") && name.ends_with(".samples") {
                    *value = match value {
                        AttributeValue::I32(_) => {
                            AttributeValue::I32(i32::try_from(total_samples).unwrap_or(i32::MAX))
                        }
                        AttributeValue::F32(_) => AttributeValue::F32(total_samples as f32),
                        _ => AttributeValue::Text(Text::from(total_samples.to_string().as_str())),
                    };
                }
            }
        }
        header
    }
}

fn views_of(header: &Header) -> Vec<String> {
    header
        .own_attributes
        .multi_view_names
        .as_ref()
        .map(|views| views.iter().map(ToString::to_string).collect())
        .unwrap_or_default()
}

/// Reads the header of a partial and classifies its channels. Checks the
/// structure (single part, scanlines, 32-bit float channels) but reads no
/// pixels.
pub fn read_layout(path: &Path) -> Result<Layout> {
    Ok(Layout::from_header(crate::partial::read_header(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn classifies_by_the_pass_component() {
        let n = names(&[
            "My.Layer.DiffCol.R",
            "My.Layer.DiffDir.R",
            "ViewLayer.Combined.A",
            "ViewLayer.CryptoObject00.r",
            "ViewLayer.Denoising Albedo.R",
            "ViewLayer.Depth.Z",
            "ViewLayer.GlossDir.G",
            "ViewLayer.IndexOB.X",
            "R",
        ]);
        let rules = classify(&n, &[]);
        assert_eq!(
            rules,
            vec![
                MergeRule::WeightedMean,
                MergeRule::LightOverColor { color: 0 },
                MergeRule::WeightedMean,
                MergeRule::FromSampleZero,
                MergeRule::WeightedMean,
                MergeRule::Min,
                // No GlossCol in the list: plain weighted mean.
                MergeRule::WeightedMean,
                MergeRule::FromSampleZero,
                MergeRule::WeightedMean,
            ]
        );
    }

    #[test]
    fn multi_view_names_skip_the_view() {
        let n = names(&["L.DiffCol.left.R", "L.DiffDir.left.R", "L.Depth.left.Z"]);
        let rules = classify(&n, &["left".to_owned(), "right".to_owned()]);
        assert_eq!(
            rules,
            vec![
                MergeRule::WeightedMean,
                MergeRule::LightOverColor { color: 0 },
                MergeRule::Min
            ]
        );
    }
}
