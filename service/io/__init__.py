"""Reading requests: bodies under the deadline, forms and JSON, image decoding within its
budget, pure preprocessing to 28x28, protocol tensors to image batches."""
