"""SynthAG: the embedded, procedurally rendered aerial-ground person benchmark."""
