//! Model prices and cost arithmetic in integer nano-dollars.
