//! Configures running clusters: `scheduled → configuring → configured → ready`.
