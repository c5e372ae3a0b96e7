//! Hourly prices per machine type: a maintained default table (`prices.toml` beside this
//! file) that a configuration can override.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

const DEFAULT_TABLE: &str = include_str!("prices.toml");

/// Prices for one provider.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderPrices {
    /// US dollars per hour, by machine type.
    #[serde(default)]
    pub on_demand: BTreeMap<String, f64>,
    /// US dollars per hour, by machine type (an estimate: spot prices move).
    #[serde(default)]
    pub spot: BTreeMap<String, f64>,
}

/// The price table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    /// When the prices were read (`YYYY-MM`).
    pub retrieved: String,
    #[serde(default)]
    pub aws: ProviderPrices,
    #[serde(default)]
    pub gcp: ProviderPrices,
}

/// The price table does not parse.
#[derive(Debug, thiserror::Error)]
pub enum PriceError {
    #[error("price table: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("price table: the price of `{0}` must be a finite number ≥ 0")]
    Negative(String),
}

impl PriceTable {
    /// The table shipped with this crate.
    pub fn builtin() -> Self {
        // The built-in table is checked by a unit test; failing here is a build defect.
        Self::parse(DEFAULT_TABLE).unwrap_or_else(|error| panic!("{error}"))
    }

    /// Parses a table in the format of `prices.toml`.
    pub fn parse(text: &str) -> Result<Self, PriceError> {
        let table: Self = toml::from_str(text)?;
        for prices in [&table.aws, &table.gcp] {
            for (machine, price) in prices.on_demand.iter().chain(&prices.spot) {
                if !price.is_finite() || *price < 0.0 {
                    return Err(PriceError::Negative(machine.clone()));
                }
            }
        }
        Ok(table)
    }

    /// Adds `overrides` for `provider` on top of this table.
    pub fn with_overrides(mut self, provider: &str, overrides: &ProviderPrices) -> Self {
        let prices = match provider {
            "aws" => &mut self.aws,
            "gcp" => &mut self.gcp,
            _ => return self,
        };
        prices.on_demand.extend(overrides.on_demand.clone());
        prices.spot.extend(overrides.spot.clone());
        self
    }

    /// US dollars per hour for a machine type; `None` when the table does not know it.
    pub fn hourly(&self, provider: &str, machine_type: &str, spot: bool) -> Option<f64> {
        let prices = match provider {
            "aws" => &self.aws,
            "gcp" => &self.gcp,
            _ => return None,
        };
        let table = if spot {
            &prices.spot
        } else {
            &prices.on_demand
        };
        table.get(machine_type).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_table_parses_and_spot_is_cheaper() {
        let table = PriceTable::builtin();
        assert!(!table.retrieved.is_empty());
        for prices in [&table.aws, &table.gcp] {
            assert!(!prices.on_demand.is_empty());
            for (machine, spot) in &prices.spot {
                let on_demand = prices.on_demand[machine];
                assert!(*spot < on_demand, "{machine}: spot {spot} ≥ {on_demand}");
            }
        }
        assert_eq!(table.hourly("aws", "c6i.4xlarge", false), Some(0.68));
        assert_eq!(table.hourly("gcp", "no-such-type", true), None);
    }

    #[test]
    fn overrides_win_and_bad_tables_are_refused() {
        let overrides = ProviderPrices {
            spot: BTreeMap::from([("c6i.4xlarge".to_owned(), 0.2)]),
            ..ProviderPrices::default()
        };
        let table = PriceTable::builtin().with_overrides("aws", &overrides);
        assert_eq!(table.hourly("aws", "c6i.4xlarge", true), Some(0.2));
        assert_eq!(table.hourly("aws", "c6i.4xlarge", false), Some(0.68));
        let error = PriceTable::parse("retrieved = \"x\"\n[aws.spot]\n\"m\" = -1.0\n").unwrap_err();
        assert!(error.to_string().contains("`m`"), "{error}");
        assert!(PriceTable::parse("retrieved = \"x\"\n[azure.spot]\n").is_err());
    }
}
