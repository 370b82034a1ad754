"""A TF Serving stand-in, run by test_end_to_end.py in a fresh Python process.

    python serving_client.py SAVED_MODEL_DIR REQUEST_JSON RESULT_JSON

Loads the SavedModel with the `serve` tag, as tensorflow_model_server does, takes a REST
predict body (`{"instances": [{"b64": ...}, ...]}`) from REQUEST_JSON, decodes the base64
exactly as the REST front end does, runs `serving_default` and writes what it saw to
RESULT_JSON: the signatures (dtypes, shapes), the outputs, and the error text for garbage.
"""

import base64
import json
import sys

import tensorflow as tf


def describe(signature):
  inputs = signature.structured_input_signature[1]
  return {
      'inputs': {k: [v.dtype.name, v.shape.as_list()] for k, v in inputs.items()},
      'outputs': {k: [v.dtype.name, v.shape.as_list()]
                  for k, v in signature.structured_outputs.items()},
  }


def main(saved_model_dir, request_path, result_path):
  model = tf.saved_model.load(saved_model_dir, tags=['serve'])
  with open(request_path, encoding='utf-8') as f:
    request = json.load(f)
  serve = model.signatures['serving_default']
  result = {'signatures': {name: describe(sig) for name, sig in model.signatures.items()},
            'responses': []}
  for instances in request['batches']:
    image_bytes = tf.constant([base64.b64decode(i['b64']) for i in instances])
    out = serve(image_bytes=image_bytes)
    result['responses'].append({k: v.numpy().tolist() if v.dtype != tf.string
                                else [[s.decode() for s in row] for row in v.numpy()]
                                for k, v in out.items()})
  try:
    serve(image_bytes=tf.constant([b'this is not an image']))
    result['garbage_error'] = None
  except tf.errors.InvalidArgumentError as e:
    result['garbage_error'] = e.message
  with open(result_path, 'w', encoding='utf-8') as f:
    json.dump(result, f)


if __name__ == '__main__':
  main(*sys.argv[1:])
