"""One module per gate; ``registry`` lists them in the order the default suite runs them."""
