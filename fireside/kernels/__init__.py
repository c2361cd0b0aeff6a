"""Native kernels: ggml's quantized CPU matmuls (`fireside.kernels.ggml`)."""
