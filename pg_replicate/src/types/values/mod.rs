//! Postgres values to Arrow: the type mapping and the column builders that
//! decode COPY binary and pgoutput text values straight into Arrow arrays.
