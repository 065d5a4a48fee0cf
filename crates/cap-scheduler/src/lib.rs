//! cap-scheduler: under construction in this session.
