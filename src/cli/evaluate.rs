//! `hefl evaluate`: the test accuracy and loss of a saved model.

use super::args::load_mnist;
use anyhow::Result;
use clap::Args;
use hefl::report::thousands;
use std::path::PathBuf;

/// `hefl evaluate` flags.
#[derive(Args)]
pub struct EvaluateArgs {
    /// The model: a safetensors file written by --model-out of train, demo or join.
    #[arg(long, value_name = "FILE.safetensors")]
    pub model: PathBuf,
    /// Folder with the MNIST IDX files (default: $MNIST_DIR, else the user cache).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Evaluate on only the first N test images (as the run's --test-subset did).
    #[arg(long, value_name = "N")]
    pub test_subset: Option<usize>,
}

/// Reads the model (before the data: a bad file fails fast) and prints its test results.
pub fn run(args: &EvaluateArgs) -> Result<()> {
    let model = hefl::model::read_model(&args.model)?;
    let data = load_mnist(args.data_dir.as_deref())?;
    let test = match args.test_subset {
        Some(n) => data.test.take(n),
        None => data.test,
    };
    let eval = model.try_evaluate(test.images.view(), &test.labels)?;
    println!(
        "test accuracy {:.2}%, test loss {:.4} ({} images)",
        100.0 * eval.accuracy,
        eval.loss,
        thousands(test.len())
    );
    Ok(())
}
