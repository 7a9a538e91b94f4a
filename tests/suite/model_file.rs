//! Model files: the safetensors layout, bit-exact round trips, and refusal of malformed files
//! with errors that name what was expected.

use std::collections::HashMap;

use hefl::model::{
    Activation, InputProjection, MAX_MODEL_FILE_BYTES, MAX_MODEL_LAYERS, Mlp, ModelError,
    ModelFileError, ModelFormatError, model_from_bytes, model_to_bytes, read_model, write_model,
};
use hefl::secret_file::SecretFileError;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

/// A 6-5-4-3 network whose parameters include values a lossy format would change.
fn odd_model() -> Mlp {
    let mut mlp = Mlp::new(&[6, 5, 4, 3], 11).expect("valid layers");
    let specials = [
        f32::NAN,
        -0.0,
        f32::MIN_POSITIVE / 8.0, // subnormal
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::from_bits(0x7fc0_1234), // NaN with a payload
        f32::MAX,
    ];
    for (p, s) in mlp.params_mut().iter_mut().zip(specials) {
        *p = s;
    }
    mlp
}

fn bits(params: &[f32]) -> Vec<u32> {
    params.iter().map(|p| p.to_bits()).collect()
}

/// One tensor of a hand-made file.
struct Tensor {
    name: &'static str,
    dtype: Dtype,
    shape: Vec<usize>,
}

/// A safetensors file of zero-filled tensors with this metadata.
fn hand_made(tensors: &[Tensor], metadata: &[(&str, &str)]) -> Vec<u8> {
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| vec![0u8; t.shape.iter().product::<usize>() * t.dtype.bitsize() / 8])
        .collect();
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .zip(&data)
        .map(|(t, d)| {
            (
                t.name,
                TensorView::new(t.dtype, t.shape.clone(), d).expect("consistent test tensor"),
            )
        })
        .collect();
    let metadata: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    safetensors::serialize(views, Some(metadata)).expect("serialize test file")
}

const META_4_3_2: [(&str, &str); 3] = [
    ("format", "hefl-mlp"),
    ("format_version", "1"),
    ("layers", "4,3,2"),
];

/// The tensors of a valid 4-3-2 model, with `change` applied to them.
fn tensors_4_3_2(change: impl FnOnce(&mut Vec<Tensor>)) -> Vec<Tensor> {
    let t = |name, shape: &[usize]| Tensor {
        name,
        dtype: Dtype::F32,
        shape: shape.to_vec(),
    };
    let mut tensors = vec![
        t("layer0.weight", &[3, 4]),
        t("layer0.bias", &[3]),
        t("layer1.weight", &[2, 3]),
        t("layer1.bias", &[2]),
    ];
    change(&mut tensors);
    tensors
}

fn refused(bytes: &[u8]) -> ModelFormatError {
    match model_from_bytes(bytes) {
        Ok(mlp) => panic!("accepted a malformed file as {:?}", mlp.layers()),
        Err(e) => e,
    }
}

#[test]
fn model_file_round_trip_is_bit_identical() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nested").join("model.safetensors");
    let mlp = odd_model();
    write_model(&path, &mlp).expect("write");
    let back = read_model(&path).expect("read");
    assert_eq!(back.layers(), mlp.layers());
    assert_eq!(bits(back.params()), bits(mlp.params()));

    // Writing again replaces the file and leaves no temporary file behind.
    let other = Mlp::new(&[784, 16, 10], 1).expect("valid layers");
    write_model(&path, &other).expect("replace");
    assert_eq!(read_model(&path).expect("read again"), other);
    let entries = std::fs::read_dir(path.parent().expect("parent"))
        .expect("list")
        .count();
    assert_eq!(entries, 1, "a temporary file was left behind");
}

#[test]
fn model_file_layout_is_pytorch_linear_with_metadata() {
    let mlp = odd_model();
    let bytes = model_to_bytes(&mlp).expect("serialize");
    let (_, header) = SafeTensors::read_metadata(&bytes).expect("valid safetensors");
    let metadata = header.metadata().as_ref().expect("__metadata__");
    assert_eq!(metadata["format"], "hefl-mlp");
    assert_eq!(metadata["format_version"], "1");
    assert_eq!(metadata["layers"], "6,5,4,3");
    assert_eq!(metadata["hefl_version"], env!("CARGO_PKG_VERSION"));

    let file = SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let mut names = file.names();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "layer0.bias",
            "layer0.weight",
            "layer1.bias",
            "layer1.weight",
            "layer2.bias",
            "layer2.weight"
        ]
    );
    // Layer 1 (5 -> 4): the model holds W as [in, out] row-major after layer 0's 6*5 + 5
    // values; the file holds it as [out, in].
    let weight = file.tensor("layer1.weight").expect("present");
    assert_eq!((weight.dtype(), weight.shape()), (Dtype::F32, &[4, 5][..]));
    let values: Vec<f32> = weight
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let offset = 6 * 5 + 5;
    for o in 0..4 {
        for i in 0..5 {
            assert_eq!(
                values[o * 5 + i].to_bits(),
                mlp.params()[offset + i * 4 + o].to_bits(),
                "file weight[{o}][{i}] is model W[{i}][{o}]"
            );
        }
    }
    let bias = file.tensor("layer1.bias").expect("present");
    assert_eq!(bias.shape(), &[4]);
    assert_eq!(
        bias.data(),
        mlp.params()[offset + 20..offset + 24]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>()
    );
}

#[test]
fn model_file_hand_made_in_the_documented_format_is_read() {
    let bytes = hand_made(&tensors_4_3_2(|_| {}), &META_4_3_2);
    let mlp = model_from_bytes(&bytes).expect("a valid hand-made file");
    assert_eq!(mlp.layers(), &[4, 3, 2]);
    assert!(mlp.params().iter().all(|&p| p == 0.0));
}

#[test]
fn model_file_refuses_truncated_files() {
    let bytes = model_to_bytes(&odd_model()).expect("serialize");
    for len in [0, 7, 8, 20, bytes.len() / 2, bytes.len() - 1] {
        let err = refused(&bytes[..len]);
        assert!(
            matches!(err, ModelFormatError::Container(_)),
            "{len} bytes: {err}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(refused(&longer), ModelFormatError::Container(_)));
}

#[test]
fn model_file_refuses_wrong_dtype() {
    let tensors = tensors_4_3_2(|t| t[2].dtype = Dtype::F64);
    let err = refused(&hand_made(&tensors, &META_4_3_2));
    assert!(
        matches!(&err, ModelFormatError::WrongDtype { name, found: Dtype::F64 } if name == "layer1.weight"),
        "{err}"
    );
    assert!(err.to_string().contains("expected F32"), "{err}");
}

#[test]
fn model_file_refuses_shapes_that_do_not_chain() {
    // layer1 takes 5 inputs, but layer0 has 3 outputs.
    let tensors = tensors_4_3_2(|t| t[2].shape = vec![2, 5]);
    let err = refused(&hand_made(&tensors, &META_4_3_2));
    assert!(
        matches!(&err, ModelFormatError::WrongShape { name, expected, found, .. }
            if name == "layer1.weight" && expected == &[2, 3] && found == &[2, 5]),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("expected [2, 3]") && message.contains("layers 4,3,2"),
        "{message}"
    );

    // A weight stored as [in, out] instead of [out, in].
    let transposed = tensors_4_3_2(|t| t[0].shape = vec![4, 3]);
    assert!(matches!(
        refused(&hand_made(&transposed, &META_4_3_2)),
        ModelFormatError::WrongShape { .. }
    ));
}

#[test]
fn model_file_refuses_missing_and_unexpected_tensors() {
    let missing = tensors_4_3_2(|t| {
        t.remove(3);
    });
    let err = refused(&hand_made(&missing, &META_4_3_2));
    assert!(
        matches!(&err, ModelFormatError::MissingTensor { name, shape } if name == "layer1.bias" && shape == &[2]),
        "{err}"
    );

    let extra = tensors_4_3_2(|t| {
        t.push(Tensor {
            name: "layer2.weight",
            dtype: Dtype::F32,
            shape: vec![1, 2],
        })
    });
    let err = refused(&hand_made(&extra, &META_4_3_2));
    assert!(
        matches!(&err, ModelFormatError::UnexpectedTensor { name, .. } if name == "layer2.weight"),
        "{err}"
    );
    assert!(err.to_string().contains("layer1.bias"), "{err}");
}

#[test]
fn model_file_refuses_missing_or_foreign_metadata() {
    let tensors = tensors_4_3_2(|_| {});
    let err = refused(&hand_made(&tensors, &META_4_3_2[1..]));
    assert!(
        matches!(err, ModelFormatError::MissingMetadata { key: "format" }),
        "{err}"
    );
    let err = refused(&hand_made(&tensors, &META_4_3_2[..2]));
    assert!(
        matches!(err, ModelFormatError::MissingMetadata { key: "layers" }),
        "{err}"
    );
    let foreign = [
        ("format", "pt"),
        ("format_version", "1"),
        ("layers", "4,3,2"),
    ];
    let err = refused(&hand_made(&tensors, &foreign));
    assert!(
        matches!(&err, ModelFormatError::WrongMetadata { key: "format", found, .. } if found == "pt"),
        "{err}"
    );
    let newer = [
        ("format", "hefl-mlp"),
        ("format_version", "3"),
        ("layers", "4,3,2"),
    ];
    assert!(matches!(
        refused(&hand_made(&tensors, &newer)),
        ModelFormatError::WrongMetadata {
            key: "format_version",
            ..
        }
    ));
    for layers in ["4,3,x", "4", "4,0,2", ""] {
        let meta = [
            ("format", "hefl-mlp"),
            ("format_version", "1"),
            ("layers", layers),
        ];
        let err = refused(&hand_made(&tensors, &meta));
        assert!(
            matches!(err, ModelFormatError::BadLayers { .. }),
            "{layers:?}: {err}"
        );
    }
}

#[test]
fn model_file_refuses_huge_declared_sizes_without_allocating() {
    // A file holds any model the library can train, and no larger.
    assert_eq!(
        hefl::model::MAX_MODEL_PARAMS,
        hefl::he::MAX_PLAINTEXT_LEN,
        "model file bound vs training bound"
    );
    let tensors = tensors_4_3_2(|_| {});
    // Widths whose parameter count is too large, or overflows usize.
    for layers in [
        "784,100000000,10".to_owned(),
        format!("{},{}", usize::MAX, usize::MAX),
        vec!["1"; MAX_MODEL_LAYERS + 1].join(","),
    ] {
        let meta = [
            ("format", "hefl-mlp"),
            ("format_version", "1"),
            ("layers", layers.as_str()),
        ];
        let err = refused(&hand_made(&tensors, &meta));
        assert!(
            matches!(err, ModelFormatError::BadLayers { .. }),
            "{layers:.40}: {err}"
        );
        assert!(err.to_string().len() < 300, "error quotes too much: {err}");
    }

    // A header that declares a tensor far larger than the file.
    let header = r#"{"__metadata__":{"format":"hefl-mlp","format_version":"1","layers":"4,3,2"},"layer0.weight":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,16]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend([0u8; 16]);
    assert!(matches!(refused(&bytes), ModelFormatError::Container(_)));

    // A header length near 2^64.
    let mut bytes = u64::MAX.to_le_bytes().to_vec();
    bytes.extend(b"{}");
    assert!(matches!(refused(&bytes), ModelFormatError::Container(_)));
}

#[test]
fn read_model_refuses_large_files_and_non_files_naming_the_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let big = dir.path().join("big.safetensors");
    let file = std::fs::File::create(&big).expect("create");
    file.set_len(MAX_MODEL_FILE_BYTES + 1).expect("sparse file");
    let err = read_model(&big).unwrap_err();
    assert!(
        matches!(err, ModelFileError::File(SecretFileError::TooLarge { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("big.safetensors"), "{err}");

    let err = read_model(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            ModelFileError::File(SecretFileError::NotRegularFile { .. })
        ),
        "{err}"
    );

    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"not a model at all").expect("write");
    let err = read_model(&garbage).unwrap_err();
    assert!(
        matches!(err, ModelFileError::Format { .. }) && err.to_string().contains("garbage"),
        "{err}"
    );
}

#[test]
fn try_evaluate_refuses_data_that_does_not_fit_the_model() {
    let data = crate::util::tiny_mnist();
    let mlp = Mlp::new(&[6, 5, 3], 1).expect("valid layers");
    assert_eq!(
        mlp.try_evaluate(data.test.images.view(), &data.test.labels),
        Err(ModelError::WrongInputWidth {
            inputs: 6,
            found: 784
        })
    );
    let mlp = Mlp::new(&[784, 5, 3], 1).expect("valid layers");
    assert!(matches!(
        mlp.try_evaluate(data.test.images.view(), &data.test.labels),
        Err(ModelError::LabelOutOfRange { classes: 3, .. })
    ));
    let mlp = Mlp::new(&[784, 5, 10], 1).expect("valid layers");
    assert_eq!(
        mlp.try_evaluate(data.test.images.view(), &data.test.labels),
        Ok(mlp.evaluate(data.test.images.view(), &data.test.labels))
    );
}

/// A tanh model behind a 7-to-4 projection with distinct entries (a transposition mistake
/// would show).
fn projected_tanh_model() -> Mlp {
    let matrix = (0..28).map(|i| i as f32 / 7.0 - 2.0).collect();
    let projection = InputProjection::new(7, 4, matrix).expect("sizes match");
    Mlp::with_activation(&[4, 3, 2], Activation::Tanh, 5)
        .expect("valid layers")
        .set_projection(Some(projection))
        .expect("projection fits")
}

fn metadata_of(bytes: &[u8]) -> HashMap<String, String> {
    let (_, header) = SafeTensors::read_metadata(bytes).expect("valid safetensors");
    header.metadata().clone().expect("__metadata__")
}

#[test]
fn model_file_round_trips_activation_and_projection() {
    let mlp = projected_tanh_model();
    let bytes = model_to_bytes(&mlp).expect("serialize");
    let metadata = metadata_of(&bytes);
    assert_eq!(metadata["format_version"], "2");
    assert_eq!(metadata["activation"], "tanh");
    assert_eq!(metadata["input_width"], "7");
    let back = model_from_bytes(&bytes).expect("read back");
    assert_eq!(back, mlp);
    assert_eq!(back.activation(), Activation::Tanh);
    assert_eq!(back.input_width(), 7);

    // The projection is stored as PyTorch's Linear weight: [outputs, inputs].
    let tensors = SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let weight = tensors
        .tensor("projection.weight")
        .expect("projection tensor");
    assert_eq!(weight.shape(), &[4, 7]);
    let values: Vec<f32> = weight
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let matrix = mlp.projection().expect("projection").matrix();
    for o in 0..4 {
        for i in 0..7 {
            assert_eq!(values[o * 7 + i].to_bits(), matrix[i * 4 + o].to_bits());
        }
    }

    // Evaluation reads raw inputs through the projection.
    let x = ndarray::Array2::from_shape_fn((3, 7), |(r, c)| (r * 7 + c) as f32 / 21.0);
    assert_eq!(back.logits(x.view()), mlp.logits(x.view()));

    // A ReLU model without projection stays a version 1 file, as before.
    let relu = model_to_bytes(&Mlp::new(&[4, 3, 2], 5).expect("valid")).expect("serialize");
    assert_eq!(metadata_of(&relu)["format_version"], "1");
    assert_eq!(metadata_of(&relu)["activation"], "relu");
    // tanh alone is version 2 too (an older reader must not run it with ReLU).
    let tanh = Mlp::with_activation(&[4, 3, 2], Activation::Tanh, 5).expect("valid");
    let tanh_bytes = model_to_bytes(&tanh).expect("serialize");
    assert_eq!(metadata_of(&tanh_bytes)["format_version"], "2");
    assert_eq!(
        model_from_bytes(&tanh_bytes).expect("read").activation(),
        Activation::Tanh
    );
}

#[test]
fn model_file_refuses_unknown_or_misplaced_activation_and_projection() {
    let tensors = tensors_4_3_2(|_| {});
    let with = |version: &'static str, extra: &[(&'static str, &'static str)]| {
        let mut meta = vec![
            ("format", "hefl-mlp"),
            ("format_version", version),
            ("layers", "4,3,2"),
        ];
        meta.extend_from_slice(extra);
        meta
    };
    // No activation entry: ReLU (files written by hand from the version 1 docs).
    let plain = model_from_bytes(&hand_made(&tensors, &with("1", &[]))).expect("read");
    assert_eq!(plain.activation(), Activation::Relu);
    let err = refused(&hand_made(
        &tensors,
        &with("2", &[("activation", "sigmoid")]),
    ));
    assert!(
        matches!(&err, ModelFormatError::BadMetadata { key: "activation", found, .. } if found == "sigmoid"),
        "{err}"
    );
    assert!(err.to_string().contains("relu or tanh"), "{err}");
    let err = refused(&hand_made(&tensors, &with("1", &[("activation", "tanh")])));
    assert!(
        matches!(
            err,
            ModelFormatError::BadMetadata {
                key: "activation",
                ..
            }
        ),
        "{err}"
    );
    // input_width without its tensor, a tensor without input_width, a bad width.
    let err = refused(&hand_made(&tensors, &with("2", &[("input_width", "5")])));
    assert!(
        matches!(&err, ModelFormatError::MissingTensor { name, shape } if name == "projection.weight" && shape == &vec![4, 5]),
        "{err}"
    );
    let projected = tensors_4_3_2(|t| {
        t.push(Tensor {
            name: "projection.weight",
            dtype: Dtype::F32,
            shape: vec![4, 5],
        })
    });
    assert!(matches!(
        refused(&hand_made(&projected, &with("2", &[]))),
        ModelFormatError::UnexpectedTensor { .. }
    ));
    for width in ["0", "x", "-3", "99999999999999999999"] {
        let meta = [
            ("format", "hefl-mlp"),
            ("format_version", "2"),
            ("layers", "4,3,2"),
            ("input_width", width),
        ];
        let err = refused(&hand_made(&projected, &meta));
        assert!(
            matches!(
                err,
                ModelFormatError::BadMetadata {
                    key: "input_width",
                    ..
                }
            ),
            "{width}: {err}"
        );
    }
    let err = refused(&hand_made(&projected, &with("1", &[("input_width", "5")])));
    assert!(
        matches!(
            err,
            ModelFormatError::BadMetadata {
                key: "input_width",
                ..
            }
        ),
        "{err}"
    );
    let wrong_shape = tensors_4_3_2(|t| {
        t.push(Tensor {
            name: "projection.weight",
            dtype: Dtype::F32,
            shape: vec![5, 4],
        })
    });
    assert!(matches!(
        refused(&hand_made(
            &wrong_shape,
            &with("2", &[("input_width", "5")])
        )),
        ModelFormatError::WrongShape { .. }
    ));
    let fine = model_from_bytes(&hand_made(&projected, &with("2", &[("input_width", "5")])))
        .expect("a valid projected model");
    assert_eq!(fine.input_width(), 5);
}
