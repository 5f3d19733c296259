//! Locks that a panic does not poison for everyone else.
//!
//! A thread that panicked while holding the lock left the state consistent (every
//! mutation is a single insert/remove), so carry on.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A thread that panicked while holding the lock left the state consistent (every
    // mutation is a single insert/remove), so carry on.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}
