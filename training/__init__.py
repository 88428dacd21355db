"""Offline training of the Fashion-MNIST classifier that the service loads."""
