//! Medians and spreads of repeated measurements.

/// One measured quantity: the value from each repetition.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    values: Vec<f64>,
}

impl Sample {
    pub fn push(&mut self, v: f64) {
        assert!(v.is_finite(), "a measurement came out as {v}");
        self.values.push(v);
    }

    fn sorted(&self) -> Vec<f64> {
        assert!(!self.values.is_empty(), "no repetition was measured");
        let mut v = self.values.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    /// `num / den` repetition by repetition (both measured in the same repetitions).
    pub fn ratio(num: &Sample, den: &Sample) -> Sample {
        assert_eq!(num.values.len(), den.values.len(), "unpaired repetitions");
        let mut r = Sample::default();
        for (n, d) in num.values.iter().zip(&den.values) {
            r.push(n / d);
        }
        r
    }

    /// The most recent repetition.
    pub fn last(&self) -> f64 {
        *self.values.last().expect("no repetition was measured")
    }

    pub fn median(&self) -> f64 {
        let v = self.sorted();
        let mid = v.len() / 2;
        if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        }
    }

    pub fn min(&self) -> f64 {
        self.sorted()[0]
    }

    pub fn max(&self) -> f64 {
        self.sorted()[self.values.len() - 1]
    }

    /// (max - min) / median, in percent: how much the repetitions disagreed.
    pub fn spread_pct(&self) -> f64 {
        let m = self.median();
        if m == 0.0 {
            0.0
        } else {
            (self.max() - self.min()) / m * 100.0
        }
    }
}

impl Sample {
    /// The same repetitions multiplied by `k` (a change of unit).
    pub fn scaled(&self, k: f64) -> Sample {
        Sample {
            values: self.values.iter().map(|v| v * k).collect(),
        }
    }
}
