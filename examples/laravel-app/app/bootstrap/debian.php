<?php

// The framework comes from Debian's php-laravel-framework package (Laravel 8.83), not from
// vendor/: its autoloader registers Illuminate\ and every library Laravel needs (Symfony,
// Monolog, Carbon, ...), each one installed by its own Debian package under /usr/share/php.
// Composer's own autoloader (vendor/autoload.php, made by `composer install`) requires this
// file; with current Laravel, `laravel/framework` is a composer dependency instead.
require_once '/usr/share/php/Illuminate/autoload.php';
