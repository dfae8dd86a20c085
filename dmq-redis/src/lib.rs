//! Redis broker and result backend for dmq (work in progress: see the Redis issue).
