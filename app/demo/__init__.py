"""The bundled demo: the seed box (generated topology) and the 8-node story recorded from it."""
