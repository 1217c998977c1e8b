"""Where the server runs: one launcher per backend behind one interface; none talks to the model."""
