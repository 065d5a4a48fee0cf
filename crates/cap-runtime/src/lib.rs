//! cap-runtime: under construction in this session.
