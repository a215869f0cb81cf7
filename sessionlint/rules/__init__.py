"""Rule families, one module each. The registry collects them."""
