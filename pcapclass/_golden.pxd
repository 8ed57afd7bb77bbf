# The golden-ratio constant the kernels hash with (Fibonacci hashing, splitmix64 seeds), defined
# once for every kernel that cimports it.
cdef extern from *:
    """
    #define PCAPCLASS_GOLDEN 0x9E3779B97F4A7C15ULL
    """
    const unsigned long long GOLDEN "PCAPCLASS_GOLDEN"
