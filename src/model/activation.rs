//! The hidden layers' activation function.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The function every hidden layer applies to its pre-activation (the last layer has none:
/// its outputs are logits).
///
/// `Relu` is the default and what every hefl model had before the option existed. `Tanh` is
/// the bounded activation that Papernot, Thakurta, Song, Chien and Erlingsson ("Tempered
/// Sigmoid Activations for Deep Learning with Differential Privacy", AAAI 2021) found best
/// under DP-SGD: tanh is the tempered sigmoid `s·sigmoid(T·x) − o` with `s = 2, T = 2,
/// o = 1`. Bounded activations keep the gradient norms from exploding, so less of each
/// example's gradient is lost to clipping.
///
/// ```
/// use hefl::model::Activation;
///
/// assert_eq!(Activation::Relu.apply(-1.0), 0.0);
/// assert!((Activation::Tanh.apply(0.5) - 0.5f32.tanh()).abs() < 1e-7);
/// assert_eq!("tanh".parse::<Activation>(), Ok(Activation::Tanh));
/// assert_eq!(Activation::Tanh.to_string(), "tanh");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// max(0, x), with He initialisation (normal, variance 2 / fan_in).
    #[default]
    Relu,
    /// tanh(x), with LeCun initialisation (normal, variance 1 / fan_in).
    Tanh,
}

impl Activation {
    /// Every activation, in the order the help lists them.
    pub const ALL: [Self; 2] = [Self::Relu, Self::Tanh];

    /// The activation of a pre-activation value.
    #[inline]
    pub fn apply(self, z: f32) -> f32 {
        match self {
            Self::Relu => z.max(0.0),
            Self::Tanh => z.tanh(),
        }
    }

    /// The variance of the initial weights of a layer with `fan_in` inputs.
    pub(crate) fn init_variance(self, fan_in: usize) -> f32 {
        let gain = match self {
            Self::Relu => 2.0,
            Self::Tanh => 1.0,
        };
        gain / fan_in as f32
    }

    /// The name written on the command line and in model files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Relu => "relu",
            Self::Tanh => "tanh",
        }
    }
}

impl FromStr for Activation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown activation {s:?}: expected relu or tanh"))
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}
