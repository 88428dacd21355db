"""Standard inference protocols spoken beside /predict: TensorFlow Serving REST and KServe v2."""
