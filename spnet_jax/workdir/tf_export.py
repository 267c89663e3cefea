"""TensorFlow serving formats of a slimmable network (``spnet_jax.export --switchable
--saved_model --tflite``), written with `jax.experimental.jax2tf`:

* ``saved_model/``: a TF SavedModel of the switchable network, one signature ``serve(images,
  subnet)`` with the sub-network an int32 scalar input (one graph, the weights stored once,
  as the `jax.export` artifact; TF Serving batches requests of one width, and a signature
  per width would store the weights once per signature's function). Its body is the
  StableHLO of the JAX function inside an ``XlaCallModule`` op, which TF and TF Serving run;
* ``tflite/subnet_<k>.tflite``: one TFLite flatbuffer per sub-network (the standalone
  network, batch 1, static shapes), through TensorFlow's converter. TFLite has no
  run-time switch over programs, and the batch-polymorphic switchable graph does not
  convert: its strided slices become ``stablehlo.dynamic_gather`` ops, which the converter
  does not take (TF 2.21: "'vhlo.dynamic_gather_v1' op is not part of the vhlo support
  yet").

TensorFlow is imported only here (``tensorflow-cpu`` is already a dependency of the data
pipeline).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from spnet_jax.core.errors import ConfigError
from spnet_jax.workdir.switchable import switchable_function

SAVED_MODEL = 'saved_model'
TFLITE = 'tflite'
_OP = re.compile(r"'([a-z_]+\.[a-z_0-9]+)' op")


def _quiet_tf():
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    import tensorflow as tf  # noqa: PLC0415 - only the TF formats need TensorFlow

    return tf


def _input_fn(normalization):
    def prepare(images):
        if normalization is None:
            return images
        mean, std = (jnp.asarray(v, jnp.float32) for v in normalization)
        return (images.astype(jnp.float32) / 255.0 - mean) / std
    return prepare


def _failed(what: str, error: Exception) -> ConfigError:
    text = str(error)
    op = _OP.search(text)
    import tensorflow as tf  # noqa: PLC0415

    return ConfigError(
        f'{what} failed' + (f' at op {op.group(1)!r}' if op else '') + f' (TensorFlow '
        f'{tf.__version__}, jax {jax.__version__}): {text.strip().splitlines()[0][:200]}; '
        'nothing was written.')


def write_saved_model(arch, structure, variables: dict[str, Any], input_shape: Sequence[int],
                      normalization, out_dir: str) -> None:
    """``out_dir/saved_model``: the switchable network as a TF SavedModel, signature
    ``serve(images, subnet)`` (NaN logits for a sub-network out of range)."""
    from jax.experimental import jax2tf  # noqa: PLC0415

    tf = _quiet_tf()
    forward = switchable_function(arch, structure, variables, normalization)
    dims = ', '.join(str(int(d)) for d in input_shape)
    dtype = tf.float32 if normalization is None else tf.uint8
    module = tf.Module()
    try:
        module.serve = tf.function(
            jax2tf.convert(forward, polymorphic_shapes=[f'(b, {dims})', '()']), autograph=False,
            input_signature=[tf.TensorSpec([None, *input_shape], dtype, name='images'),
                             tf.TensorSpec([], tf.int32, name='subnet')])
        tf.saved_model.save(module, os.path.join(out_dir, SAVED_MODEL),
                            signatures={'serving_default': module.serve})
    except Exception as e:  # noqa: BLE001 - any converter failure is one sentence
        raise _failed('the TF SavedModel conversion', e) from e


def write_tflite(arch, standalone: list[tuple[Any, dict[str, Any]]], input_shape: Sequence[int],
                 normalization, out_dir: str, batch: int = 1) -> list[int]:
    """``out_dir/tflite/subnet_<k>.tflite`` for each ``(structure, variables)`` of
    ``standalone`` (a static ``batch``); returns the flatbuffers' sizes in bytes."""
    from jax.experimental import jax2tf  # noqa: PLC0415

    tf = _quiet_tf()
    folder = os.path.join(out_dir, TFLITE)
    os.makedirs(folder, exist_ok=True)
    prepare = _input_fn(normalization)
    dtype = tf.float32 if normalization is None else tf.uint8
    sizes = []
    for k, (structure, variables) in enumerate(standalone):
        model = arch.module(structure)
        consts = jax.tree.map(jnp.asarray, variables)
        f = lambda images, m=model, c=consts: m.apply(c, prepare(images), subnet=0,
                                                      train=False)
        try:
            fn = tf.function(jax2tf.convert(f), autograph=False,
                             input_signature=[tf.TensorSpec([batch, *input_shape], dtype)])
            converter = tf.lite.TFLiteConverter.from_concrete_functions(
                [fn.get_concrete_function()])
            flatbuffer = converter.convert()
        except Exception as e:  # noqa: BLE001
            raise _failed(f'the TFLite conversion of sub-network {k}', e) from e
        with open(os.path.join(folder, f'subnet_{k}.tflite'), 'wb') as fh:
            fh.write(flatbuffer)
        sizes.append(len(flatbuffer))
    return sizes


def run_tflite(path: str, images: np.ndarray) -> np.ndarray:
    """Logits of a TFLite flatbuffer of batch 1 on each image of ``images``, in TFLite's
    interpreter."""
    tf = _quiet_tf()
    interpreter = tf.lite.Interpreter(model_path=path)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    logits = []
    for image in images:
        interpreter.set_tensor(inp['index'], image[None].astype(inp['dtype']))
        interpreter.invoke()
        logits.append(interpreter.get_tensor(out['index'])[0])
    return np.stack(logits)
