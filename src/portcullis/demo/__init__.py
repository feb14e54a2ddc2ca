"""The bundled demo upstream that `portcullis demo` starts behind the gateway."""
