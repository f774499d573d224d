//! End-to-end tests of the `vzpkg` binary against real apt-get, dnf and a real upstream on
//! loopback. Run them with contrib/test.sh, which installs what they need.

mod util;

mod audit;
mod clients;
mod confinement;
mod contrib;
mod faults;
mod fleet;
mod layered;
mod proxy;
mod prune;
mod rpm;
mod running;
mod sandbox;
mod scale;
mod security;
mod templates;
mod verify;
mod wrapper;
