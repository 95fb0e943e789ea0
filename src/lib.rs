//! meshroute core
